"""The package as a JAX project uses it, for both cells: mixed precision and ``jax_enable_x64`` through the
pure functions and both layer families, forward-mode differentiation (or its one-line refusal),
``initial_state`` and dropout rates in the layers, the Keras and PyTorch converters both ways, and the
former package name."""

import importlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqclf import models
from seqclf.errors import ConfigError
from seqclf.rnn import GRU, GRU_CELL, LSTM, LSTM_CELL, Bidirectional, Stacked, init_cell_params, rnn
from seqclf.rnn import nnx as rnn_nnx

CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")
CELLS = {"lstm": LSTM_CELL, "gru": GRU_CELL}
LINEN = {"lstm": LSTM, "gru": GRU}
NNX = {"lstm": rnn_nnx.LSTM, "gru": rnn_nnx.GRU}
# Every engine of both cells that runs on this CPU, and auto.
ENGINES = ["scan", "fused", pytest.param("cpu_kernel", marks=CPU_ONLY), "flax", "auto"]


def _inputs(cell, batch=2, steps=5, input_size=3, hidden=4, seed=0):
  params = init_cell_params(CELLS[cell], jax.random.key(seed), input_size, hidden)
  xs = jax.random.normal(jax.random.key(seed + 1), (batch, steps, input_size))
  return params, xs


def _close(actual, expected, tolerance=1e-5):
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=tolerance, atol=tolerance), actual, expected
  )


# --- precision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("input_dtype", [jnp.bfloat16, jnp.float16])
def test_float32_parameters_with_half_precision_inputs_compute_in_float32(cell, engine, input_dtype):
  """This was a raw carry-type TypeError from inside lax.scan on scan, fused, flax and auto."""
  params, xs = _inputs(cell)
  low = xs.astype(input_dtype)
  outputs, state = rnn(CELLS[cell], params, low, engine=engine)
  assert outputs.dtype == jnp.float32 and all(s.dtype == jnp.float32 for s in jax.tree.leaves(state))
  _close((outputs, state), rnn(CELLS[cell], params, low.astype(jnp.float32), engine="scan"))
  d_xs = jax.grad(lambda x: jnp.sum(rnn(CELLS[cell], params, x, engine=engine)[0]))(low)
  assert d_xs.dtype == input_dtype


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("engine", ["scan", "fused"])
def test_dtype_bfloat16_computes_in_bfloat16_near_float32(cell, engine):
  params, xs = _inputs(cell)
  outputs, state = rnn(CELLS[cell], params, xs, engine=engine, dtype=jnp.bfloat16)
  assert outputs.dtype == jnp.bfloat16
  _close(outputs.astype(jnp.float32), rnn(CELLS[cell], params, xs, engine="scan")[0], tolerance=5e-2)


@pytest.mark.parametrize("cell", list(CELLS))
def test_an_engine_without_the_compute_dtype_is_refused_naming_those_with_it(cell):
  params, xs = _inputs(cell)
  with pytest.raises(
    ConfigError,
    match=re.escape(
      f"{cell.upper()} engine 'cpu_kernel' computes in float32, not bfloat16; use engine 'scan' or 'fused' or 'flax'"
    ),
  ):
    rnn(CELLS[cell], params, xs, engine="cpu_kernel", dtype=jnp.bfloat16)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_initial_parameters_in_every_dtype_an_engine_computes_in(cell, dtype):
  """init_params(dtype=bfloat16) raised NotImplementedError (the orthogonal draw)."""
  params = init_cell_params(CELLS[cell], jax.random.key(0), 3, 4, dtype)
  assert all(p.dtype == dtype for p in params.values())
  reference = init_cell_params(CELLS[cell], jax.random.key(0), 3, 4)
  _close(jax.tree.map(lambda p: p.astype(jnp.float32), params), reference, tolerance=1e-2)


@pytest.mark.parametrize("cell", list(CELLS))
def test_layers_keep_float32_parameters_and_take_a_dtype(cell):
  _, xs = _inputs(cell)
  low = xs.astype(jnp.bfloat16)
  layer = LINEN[cell](4, engine="fused")
  variables = layer.init(jax.random.key(0), low)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert layer.apply(variables, low)[0].dtype == jnp.float32
  assert LINEN[cell](4, engine="fused", dtype=jnp.bfloat16).apply(variables, low)[0].dtype == jnp.bfloat16
  module = NNX[cell](3, 4, engine="fused", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert module.kernel[...].dtype == jnp.float32 and module(low)[0].dtype == jnp.bfloat16
  half = NNX[cell](3, 4, param_dtype=jnp.float16, rngs=nnx.Rngs(0))
  assert half.kernel[...].dtype == jnp.float16 and half(low)[0].dtype == jnp.float32


@pytest.mark.parametrize("cell", list(CELLS))
def test_under_x64_the_layers_and_the_model_keep_float32_parameters_and_run_on_every_engine(cell):
  """The Linen LSTM created float64 parameters that every LSTM engine refused (seqclf-train failed)."""
  with jax.enable_x64(True):
    _, xs = _inputs(cell)
    xs = xs.astype(jnp.float32)
    variables = LINEN[cell](4).init(jax.random.key(0), xs)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    assert LINEN[cell](4).apply(variables, xs)[0].dtype == jnp.float32
    assert NNX[cell](3, 4, rngs=nnx.Rngs(0)).kernel[...].dtype == jnp.float32
    model = models.create(cell, vocab_size=10, lstm_features=4, engine="auto")
    tokens = jnp.ones((2, 5), jnp.int32)
    model_variables = model.init(jax.random.key(0), tokens)
    assert {p.dtype for p in jax.tree.leaves(model_variables)} == {jnp.dtype(jnp.float32)}
    grads = jax.grad(lambda v: jnp.sum(model.apply(v, tokens)))(model_variables)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


# --- forward mode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("engine", ["scan", "flax"])
def test_jvp_works_on_the_engines_that_have_it(cell, engine):
  params, xs = _inputs(cell)
  run = lambda x: rnn(CELLS[cell], params, x, engine=engine)[0]  # noqa: E731
  _, tangent = jax.jvp(run, (xs,), (jnp.ones_like(xs),))
  _, expected = jax.jvp(lambda x: rnn(CELLS[cell], params, x, engine="scan")[0], (xs,), (jnp.ones_like(xs),))
  _close(tangent, expected)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("engine", ["fused", pytest.param("cpu_kernel", marks=CPU_ONLY)])
def test_jvp_on_a_hand_written_vjp_is_one_line_naming_the_engines_with_it(cell, engine):
  params, xs = _inputs(cell)
  words = f"{cell.upper()} engine '{engine}' has a hand-written VJP and no forward-mode derivative"
  with pytest.raises(ConfigError, match=re.escape(words) + ".*use engine 'scan' or 'flax'"):
    jax.jvp(lambda x: rnn(CELLS[cell], params, x, engine=engine)[0], (xs,), (xs,))


# --- layers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
def test_initial_state_in_both_layer_families_bidirectional_and_stacked(cell):
  params, xs = _inputs(cell)
  state = (jnp.full((2, 4), 0.5),) * len(CELLS[cell].state_names)
  state = state if len(state) > 1 else state[0]
  expected = rnn(CELLS[cell], params, xs, initial_state=state, engine="scan")
  layer = LINEN[cell](4, engine="scan")
  _close(layer.apply({"params": params}, xs, initial_state=state), expected)
  module = rnn_nnx.from_linen(NNX[cell](3, 4, engine="scan", rngs=nnx.Rngs(0)), params)
  _close(module(xs, initial_state=state), expected)
  pair = Bidirectional(LINEN[cell](4, engine="scan"), LINEN[cell](4, engine="scan"))
  both = {"params": {"forward": params, "backward": params}}
  outputs, (forward_state, _) = pair.apply(both, xs, initial_state=(state, None))
  _close((outputs[..., :4], forward_state), expected)
  stack = Stacked([LINEN[cell](4, engine="scan")])
  _close(stack.apply({"params": {"layers_0": params}}, xs, initial_state=[state]), expected)
  with pytest.raises(ConfigError, match="a stack of 1 layers got 2 initial states"):
    stack.apply({"params": {"layers_0": params}}, xs, initial_state=[state, state])


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.2"])
def test_dropout_rates_outside_zero_to_one_are_refused_by_the_layers(cell, rate):
  """A rate of 1.0 gave NaN (kept inputs scaled by 1/0)."""
  _, xs = _inputs(cell)
  words = f"recurrent_dropout must be a dropout rate in [0, 1), got {rate!r}"
  with pytest.raises(ConfigError, match=re.escape(words)):
    LINEN[cell](4, recurrent_dropout=rate).init(jax.random.key(0), xs)
  with pytest.raises(ConfigError, match=re.escape(words)):
    NNX[cell](3, 4, recurrent_dropout=rate, rngs=nnx.Rngs(0))


def test_usage_errors_are_value_errors():
  params, xs = _inputs("gru")
  with pytest.raises(ValueError, match="unknown GRU engine 'pallas'"):
    rnn(GRU_CELL, params, xs, engine="pallas")


# --- converters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
def test_keras_and_torch_converters_go_both_ways(cell):
  params, _ = _inputs(cell)
  params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases, both GRU rows
  _close(CELLS[cell].from_keras(CELLS[cell].to_keras(params)), params)
  torch_state = CELLS[cell].to_torch(params, layer=1)
  assert {k: v.shape for k, v in torch_state.items()} == {
    "weight_ih_l1": (CELLS[cell].gates * 4, 3),
    "weight_hh_l1": (CELLS[cell].gates * 4, 4),
    "bias_ih_l1": (CELLS[cell].gates * 4,),
    "bias_hh_l1": (CELLS[cell].gates * 4,),
  }
  _close(CELLS[cell].from_torch(torch_state, layer=1), params)


# --- the former name ------------------------------------------------------------------------------------


def test_the_former_package_name_re_exports_and_warns_when_imported():
  import seqclf.lstm

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    importlib.reload(seqclf.lstm)
  assert [w.category for w in caught] == [DeprecationWarning]
  assert "seqclf.lstm is now seqclf.rnn" in str(caught[0].message)
  assert seqclf.lstm.LSTM is LSTM and seqclf.lstm.nnx is rnn_nnx
  assert seqclf.lstm.gru_from_torch is GRU_CELL.from_torch

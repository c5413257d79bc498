"""What is particular to the LSTM: its equations, Keras' initialisation, the Linen layer in a user's model,
the engine registry's refusals and choices, hard_sigmoid gates, the final-state path. Every engine of both
cells against `scan` is the matrix of test_engines.py.

(`pallas` in interpret mode is in test_pallas_gpu.py, `cudnn` in test_cudnn.py.)"""

import importlib
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn import LSTM, api, cells, engines, init_params, lstm
from seqclf.rnn.engines import hoisted
from tests import jaxprs

# f32 on CPU: engines differ from the reference only in summation order.
RTOL, ATOL = 1e-5, 1e-5

SHAPES = [  # (batch, steps, input, hidden)
  (3, 7, 5, 100),  # H=100 and a batch that is not a multiple of 8
  (5, 1, 4, 6),  # a single step
  (2, 12, 3, 7),
  (19, 6, 5, 20),  # cpu_kernel: two threads, 16 + 3 rows (a full register block and a remainder)
]
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")


def _inputs(batch, steps, input_size, hidden, seed=0):
  keys = jax.random.split(jax.random.key(seed), 8)
  params = init_params(keys[0], input_size, hidden)
  # Non-zero bias and larger weights so every gate matters in the comparison.
  params = {k: v + 0.1 * jax.random.normal(keys[1], v.shape) for k, v in params.items()}
  xs = jax.random.normal(keys[2], (batch, steps, input_size))
  state = (jax.random.normal(keys[3], (batch, hidden)), jax.random.normal(keys[4], (batch, hidden)))
  mask = jax.random.bernoulli(keys[5], 0.7, (batch, steps))
  input_mask = jax.random.bernoulli(keys[6], 0.8, (batch, input_size)) / 0.8
  recurrent_mask = jax.random.bernoulli(keys[7], 0.8, (batch, hidden)) / 0.8
  return params, xs, state, mask, input_mask, recurrent_mask


def _loss_and_grads(engine, params, xs, state, **kwargs):
  def loss(params, xs, state):
    outputs, (h, c) = lstm(params, xs, initial_state=state, engine=engine, **kwargs)
    weights = jnp.linspace(-1.0, 2.0, outputs.shape[-1])
    return jnp.sum(outputs * weights) + jnp.sum(h**2) + jnp.sum(jnp.sin(c))

  return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, state)


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def test_reference_matches_lstm_equations_by_hand():
  """One step of the reference written out in numpy, gate order i, f, g, o."""
  params, xs, (h0, c0), *_ = _inputs(2, 1, 3, 4)
  p = jax.tree.map(np.asarray, params)
  z = np.asarray(xs[:, 0]) @ p["kernel"] + np.asarray(h0) @ p["recurrent_kernel"] + p["bias"]
  sig = lambda v: 1 / (1 + np.exp(-v))
  i, f, g, o = np.split(z, 4, axis=-1)
  c = sig(f) * np.asarray(c0) + sig(i) * np.tanh(g)
  h = sig(o) * np.tanh(c)
  _, (h_ref, c_ref) = lstm(params, xs, initial_state=(h0, c0), engine="scan")
  np.testing.assert_allclose(h_ref, h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_ref, c, rtol=1e-5, atol=1e-6)


def test_keras_initialisation():
  params = init_params(jax.random.key(0), 32, 100)
  bias = np.asarray(params["bias"])
  np.testing.assert_array_equal(bias[100:200], 1.0)
  np.testing.assert_array_equal(np.delete(bias, np.s_[100:200]), 0.0)
  u = np.asarray(params["recurrent_kernel"])  # [100, 400] with orthonormal rows
  np.testing.assert_allclose(u @ u.T, np.eye(100), atol=1e-5)
  limit = np.sqrt(6 / (32 + 400))
  assert np.abs(params["kernel"]).max() <= limit


@pytest.mark.parametrize("init", [init_params, api.init_gru_params])
def test_parameters_for_inputs_of_width_0_have_an_empty_kernel(init):
  params = init(jax.random.key(0), input_size=0, hidden_size=3)
  assert params["kernel"].shape == (0, params["recurrent_kernel"].shape[1])
  reference = init(jax.random.key(0), input_size=2, hidden_size=3)
  _assert_close(
    (params["recurrent_kernel"], params["bias"]), (reference["recurrent_kernel"], reference["bias"])
  )


@pytest.mark.parametrize("init", [init_params, api.init_gru_params])
@pytest.mark.parametrize(
  "sizes, words",
  [((4, 0), "hidden_size must be at least 1"), ((-1, 3), "input_size must be at least 0")],
)
def test_parameters_of_sizes_no_layer_has_are_refused_by_name(init, sizes, words):
  with pytest.raises(ConfigError, match=words):
    init(jax.random.key(0), *sizes)


def test_flax_module_params_run_through_the_pure_function():
  xs = jax.random.normal(jax.random.key(0), (2, 6, 5))
  module = LSTM(features=7, engine="fused")
  variables = module.init(jax.random.key(1), xs)
  outputs, (h, c) = module.apply(variables, xs)
  outputs2, (h2, c2) = lstm(variables["params"], xs, engine="scan")
  np.testing.assert_allclose(outputs, outputs2, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(h, h2, rtol=RTOL, atol=ATOL)


def test_module_dropout_is_off_at_eval_and_reproducible_under_a_seed():
  xs = jax.random.normal(jax.random.key(0), (4, 6, 5))
  module = LSTM(features=7, input_dropout=0.5, recurrent_dropout=0.5)
  variables = module.init(jax.random.key(1), xs)
  plain = LSTM(features=7).apply(variables, xs)[1][0]
  np.testing.assert_array_equal(module.apply(variables, xs)[1][0], plain)
  run = lambda seed: module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(seed)})[
    1
  ][0]
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.allclose(run(3), plain)
  assert not np.allclose(run(3), run(4))


def test_another_project_can_use_the_lstm_inside_its_own_model():
  """A user's model with our layer in it trains with optax-free plain SGD: the loss goes down."""

  class UserModel(nn.Module):
    @nn.compact
    def __call__(self, xs):
      _, (h, _) = LSTM(features=8)(nn.Dense(6)(xs))
      return nn.Dense(1)(h)[:, 0]

  xs = jax.random.normal(jax.random.key(0), (32, 5, 3))
  ys = (xs[:, :, 0].sum(axis=1) > 0).astype(jnp.float32)
  model = UserModel()
  params = model.init(jax.random.key(1), xs)

  @jax.jit
  def sgd_step(params):
    def loss(params):
      logits = model.apply(params, xs)
      return jnp.mean(jnp.logaddexp(0.0, logits) - ys * logits)

    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), value

  params, first = sgd_step(params)
  for _ in range(30):
    params, last = sgd_step(params)
  assert last < 0.7 * first


@CPU_ONLY
@pytest.mark.parametrize("layout", ["right", "left", "holes"])
def test_cpu_kernel_skipping_masked_steps_equals_scan(layout):
  """The kernel computes only unmasked (row, step) pairs: bucket-like right padding, left padding and
  sparse holes, with a row that is masked throughout and steps where a whole thread's rows are masked,
  over enough steps that the weight gradients are summed in several products of varying depth and the
  forward's staged states leave in several spans (16 steps, then the rest), aligned or not by row."""
  batch, steps = 19, 70
  params, xs, state, *_ = _inputs(batch, steps, 5, 20, seed=3)
  lengths = jax.random.randint(jax.random.key(4), (batch,), 0, steps + 1).at[0].set(0).at[1].set(steps)
  right = api.lengths_to_mask(lengths, steps).at[:16, 30:40].set(False)  # rows 0-15: one thread's range
  mask = {
    "right": right,
    "left": right[:, ::-1],
    "holes": jax.random.bernoulli(jax.random.key(5), 0.15, (batch, steps)).at[2].set(False),
  }[layout]
  _assert_close(
    lstm(params, xs, initial_state=state, mask=mask, engine="cpu_kernel"),
    lstm(params, xs, initial_state=state, mask=mask, engine="scan"),
  )
  expected = _loss_and_grads("scan", params, xs, state, mask=mask)
  actual = _loss_and_grads("cpu_kernel", params, xs, state, mask=mask)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    # Weight gradients sum 70 steps of terms up to ~40: float32 rounding (either side's, in its own order)
    # scales with the largest entry, so the absolute tolerance does too.
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(e).max())))


@CPU_ONLY
def test_cpu_kernel_refuses_other_dtypes():
  params, xs, *_ = _inputs(2, 3, 4, 5)
  with pytest.raises(ConfigError, match="computes in float32"):
    lstm(jax.tree.map(lambda v: v.astype(jnp.bfloat16), params), xs.astype(jnp.bfloat16), engine="cpu_kernel")


def test_unknown_engine_and_wrong_platform_are_config_errors():
  with pytest.raises(ConfigError, match="unknown LSTM engine 'nope'"):
    engines.check_engine("nope", "cpu", cell="lstm")
  with pytest.raises(ConfigError, match="needs a GPU and this process runs on cpu"):
    engines.check_engine("cudnn", "cpu", cell="lstm")
  assert engines.check_engine("auto", "cpu", cell="lstm") in engines.AUTO["lstm"]["cpu"]
  with pytest.raises(ConfigError, match="not both"):
    lstm(
      init_params(jax.random.key(0), 2, 3),
      jnp.zeros((1, 4, 2)),
      mask=jnp.ones((1, 4), bool),
      lengths=jnp.array([4]),
    )


def _trace_for_gpu(function, *args):
  """Traces ``function`` as for a GPU (on any host): what an engine is asked is checked while tracing."""
  with lowering.targeting("gpu"):
    return jax.jit(function).trace(*args)


def test_cudnn_refuses_recurrent_dropout_in_the_pure_function():
  """cuDNN has no mask on h: the pure function refuses one instead of dropping it (it used to)."""
  params, xs, _, _, _, recurrent_mask = _inputs(2, 3, 4, 5)
  run = lambda p, x, m: lstm(p, x, engine="cudnn", recurrent_dropout_mask=m)
  with pytest.raises(ConfigError, match="'cudnn' has no recurrent dropout; use engine 'scan' or 'fused'"):
    _trace_for_gpu(run, params, xs, recurrent_mask)
  with pytest.raises(ConfigError, match="'cudnn' has no recurrent dropout"):
    _trace_for_gpu(LSTM(features=5, engine="cudnn", recurrent_dropout=0.2).init, jax.random.key(0), xs)


def test_cudnn_takes_right_padding_as_lengths_and_refuses_a_mask():
  """A mask could hold left padding or holes, which cuDNN's lengths cannot express."""
  params, xs, _, mask, *_ = _inputs(2, 3, 4, 5)
  with pytest.raises(ConfigError, match="'cudnn' skips right padding given as lengths= only"):
    _trace_for_gpu(lambda p, x, m: lstm(p, x, mask=m, engine="cudnn"), params, xs, mask)
  assert engines.check_engine("cudnn", "gpu", masks="lengths", input_dropout=True, cell="lstm") == "cudnn"


def test_an_engine_asked_for_what_it_lacks_names_the_engines_that_have_it():
  params, xs, *_ = _inputs(2, 3, 4, 5)
  with pytest.raises(
    ConfigError,
    match=r"'scan' has no matmul_precision='tensorfloat32'; no engine on cpu can \(pallas can on gpu\)",
  ):
    lstm(params, xs, engine="scan", matmul_precision="tensorfloat32")
  with pytest.raises(ConfigError, match="'flax' has no padding masks; has no input dropout; use engine"):
    engines.check_engine("flax", "cpu", masks="lengths", input_dropout=True, cell="lstm")
  with pytest.raises(ConfigError, match="'cpu_kernel' computes in float32, not bfloat16"):
    engines.check_engine("cpu_kernel", "cpu", dtypes=[jnp.bfloat16], cell="lstm")


@pytest.mark.parametrize("cell", list(cells.CELLS))
def test_an_unknown_matmul_precision_is_refused_listing_the_values_the_cells_engines_take(cell):
  taken = {"float32"} | {p for engine in engines.engines_of(cell).values() for p in engine.matmul_precisions}
  for engine in ("auto", "fused"):
    with pytest.raises(
      ConfigError, match=f"unknown matmul_precision 'highest' for the {cell.upper()}; "
    ) as refusal:
      engines.check_engine(engine, "cpu", matmul_precision="highest", cell=cell)
    assert sorted(str(refusal.value).split("choose one of: ")[1].split(", ")) == sorted(taken)
  with pytest.raises(
    ConfigError, match="unknown matmul_precision 'highest' for the LSTM; choose one of: float32"
  ):
    lstm(init_params(jax.random.key(0), 1, 2), jnp.ones((1, 2, 1)), matmul_precision="highest")


def test_auto_picks_an_engine_that_can_do_the_call():
  assert engines.check_engine("auto", "cpu", dtypes=[jnp.bfloat16], cell="lstm") == "fused"
  gpu_first = next(
    engine for engine in engines.AUTO["lstm"]["gpu"] if engines.unavailable_reason(engine, "lstm") is None
  )
  assert engines.check_engine("auto", "gpu", masks="mask", cell="lstm") == gpu_first
  with pytest.raises(
    ConfigError, match=r"engine='auto' picks on cpu .*; no engine on cpu can \(pallas can on gpu\)"
  ):
    engines.check_engine("auto", "cpu", matmul_precision="tensorfloat32", cell="lstm")


def test_every_engine_entry_declares_capabilities_the_api_knows():
  for (cell, name), engine in [*engines.ENGINES.items(), (("any", "scan"), engines.SCAN)]:
    assert cell in ("any", *cells.CELLS), name
    assert engine.masks in ("any", "lengths", "none"), name
    assert set(engine.dtypes) <= {*engines.FLOAT_DTYPES, "float64"}, name
    assert set(engine.platforms) <= {"cpu", "gpu", "tpu"}, name
    assert set(engine.recurrent_activations) <= set(cells.RECURRENT_ACTIVATIONS), name


HARD_SIGMOID_ENGINES = [
  name
  for name, engine in engines.engines_of("lstm").items()
  if "hard_sigmoid" in engine.recurrent_activations
]


def test_hard_sigmoid_is_keras_1s_with_its_slope_inside_and_none_outside():
  x = jnp.array([-4.0, -2.6, -1.0, 0.0, 1.5, 2.4, 2.6, 9.0])
  np.testing.assert_allclose(cells.hard_sigmoid(x), np.clip(0.2 * np.asarray(x) + 0.5, 0, 1), rtol=1e-7)
  slope = jax.vmap(jax.grad(cells.hard_sigmoid))(x)
  np.testing.assert_allclose(slope, [0, 0, 0.2, 0.2, 0.2, 0.2, 0, 0], rtol=1e-6)
  # The fast engines' backward takes the slope from the gate's output.
  from_output = hoisted.GATE_DERIVATIVES["hard_sigmoid"](cells.hard_sigmoid(x))
  np.testing.assert_allclose(from_output, slope, rtol=1e-6)


def test_hard_sigmoid_gates_are_what_scan_computes_by_hand():
  params, xs, (h0, c0), *_ = _inputs(2, 1, 3, 4)
  p = jax.tree.map(np.asarray, params)
  z = np.asarray(xs[:, 0]) @ p["kernel"] + np.asarray(h0) @ p["recurrent_kernel"] + p["bias"]
  hard = lambda v: np.clip(0.2 * v + 0.5, 0, 1)
  i, f, g, o = np.split(z, 4, axis=-1)
  c = hard(f) * np.asarray(c0) + hard(i) * np.tanh(g)
  h = hard(o) * np.tanh(c)
  _, (h_ref, c_ref) = lstm(
    params, xs, initial_state=(h0, c0), engine="scan", recurrent_activation="hard_sigmoid"
  )
  np.testing.assert_allclose(h_ref, h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_ref, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", [e for e in HARD_SIGMOID_ENGINES if e != "scan"])
@pytest.mark.parametrize("shape", SHAPES[:3])
@pytest.mark.parametrize("with_mask_and_dropout", [False, True])
def test_hard_sigmoid_engine_equals_scan(engine, shape, with_mask_and_dropout):
  params, xs, state, mask, input_mask, recurrent_mask = _inputs(*shape)
  # Larger pre-activations so that many gates sit in hard_sigmoid's flat parts, where the slope is 0.
  params = jax.tree.map(lambda v: 3.0 * v, params)
  kwargs = {"recurrent_activation": "hard_sigmoid"}
  if with_mask_and_dropout:
    kwargs.update(mask=mask, input_dropout_mask=input_mask, recurrent_dropout_mask=recurrent_mask)
  expected_out = lstm(params, xs, initial_state=state, engine="scan", **kwargs)
  sigmoid_out = lstm(
    params, xs, initial_state=state, engine="scan", **{**kwargs, "recurrent_activation": "sigmoid"}
  )
  assert not np.allclose(expected_out[0], sigmoid_out[0], atol=1e-3)  # the option changes the cell
  run = jax.jit(lambda p, x, st: lstm(p, x, initial_state=st, engine=engine, **kwargs))
  _assert_close(run(params, xs, state), expected_out)
  expected = _loss_and_grads("scan", params, xs, state, **kwargs)
  _assert_close(_loss_and_grads(engine, params, xs, state, **kwargs), expected)


def test_hard_sigmoid_is_refused_by_engines_without_it_and_unknown_activations_are_errors():
  params, xs, *_ = _inputs(2, 3, 4, 5)
  lacking = [name for name in engines.engines_of("lstm") if name not in HARD_SIGMOID_ENGINES]
  assert "scan" in HARD_SIGMOID_ENGINES and "fused" in HARD_SIGMOID_ENGINES and lacking
  able = " or ".join(repr(name) for name in HARD_SIGMOID_ENGINES)
  for name in lacking:
    platform = engines.engines_of("lstm")[name].platforms[0]
    with pytest.raises(
      ConfigError, match=f"'{name}' has no recurrent_activation='hard_sigmoid'; use engine {able}"
    ):
      engines.check_engine(name, platform, recurrent_activation="hard_sigmoid", cell="lstm")
  with pytest.raises(
    ConfigError, match="unknown recurrent_activation 'relu'; choose one of: sigmoid, hard_sigmoid"
  ):
    lstm(params, xs, engine="scan", recurrent_activation="relu")
  # auto picks an engine that has it; the C++ kernel comes first for sigmoid gates only.
  assert (
    engines.check_engine("auto", "cpu", recurrent_activation="hard_sigmoid", cell="lstm")
    in HARD_SIGMOID_ENGINES
  )


# Engines that run here: (engine, whether it honours masks and dropout, recurrent_activation).
FINAL_STATE_CASES = [
  *[(engine, True, gates) for engine in ("scan", "fused") for gates in cells.RECURRENT_ACTIVATIONS],
  pytest.param("cpu_kernel", True, "sigmoid", marks=CPU_ONLY),
  ("flax", False, "sigmoid"),
]


def _holes_and_left_padding(batch, steps):
  """A [B, T] mask with rows left-padded by 0 to T steps (a row masked throughout) and random holes."""
  padding = jnp.arange(batch) * steps // max(batch - 1, 1)
  left = jnp.arange(steps)[None] >= padding[:, None]
  return left & jax.random.bernoulli(jax.random.key(7), 0.75, (batch, steps))


@pytest.mark.parametrize("engine, masked, recurrent_activation", FINAL_STATE_CASES)
def test_return_sequences_false_is_the_final_h_of_the_full_run_with_its_gradients(
  engine, masked, recurrent_activation
):
  batch, steps, hidden = 5, 9, 6
  params, xs, state, _, input_mask, recurrent_mask = _inputs(batch, steps, 4, hidden)
  kwargs = {"engine": engine, "recurrent_activation": recurrent_activation}
  if masked:
    kwargs.update(
      mask=_holes_and_left_padding(batch, steps),
      input_dropout_mask=input_mask,
      recurrent_dropout_mask=recurrent_mask,
    )
  weights = jnp.linspace(-1.0, 2.0, hidden)

  def loss(params, xs, state, return_sequences):
    outputs, (h, c) = lstm(params, xs, initial_state=state, return_sequences=return_sequences, **kwargs)
    final_h = outputs if not return_sequences else h  # the full run's loss reads its final h twice too
    return jnp.sum(final_h * weights) + jnp.sum(h**2) + jnp.sum(jnp.sin(c))

  _, full_state = lstm(params, xs, initial_state=state, **kwargs)
  h, final_state = jax.jit(lambda p, x, s: lstm(p, x, initial_state=s, return_sequences=False, **kwargs))(
    params, xs, state
  )
  assert h.shape == (batch, hidden)
  np.testing.assert_array_equal(h, final_state[0])
  _assert_close(final_state, full_state)
  grads = lambda return_sequences: jax.value_and_grad(loss, argnums=(0, 1, 2))(
    params, xs, state, return_sequences
  )
  _assert_close(grads(False), grads(True))


@pytest.mark.parametrize("recurrent_activation", list(cells.RECURRENT_ACTIVATIONS))
def test_fused_stores_no_per_step_outputs_for_the_final_state(recurrent_activation):
  """Without a gradient, the return_sequences=False loops of fused and scan have no per-step outputs: XLA
  would keep them even unread. The full run shows that the check finds them where they are."""
  batch, steps, hidden = 3, 11, 5
  params, xs, state, mask, *_ = _inputs(batch, steps, 4, hidden)

  def scan_outputs(engine, return_sequences):
    run = lambda p, x: lstm(
      p,
      x,
      initial_state=state,
      mask=mask,
      engine=engine,
      recurrent_activation=recurrent_activation,
      return_sequences=return_sequences,
    )
    return jaxprs.scan_output_shapes(jax.make_jaxpr(jax.jit(run))(params, xs).jaxpr)

  assert (steps, batch, hidden) in scan_outputs("fused", True)
  for engine in ("fused", "scan"):
    final = scan_outputs(engine, False)
    assert final and all(shape[:1] != (steps,) for shape in final), (engine, final)


@pytest.mark.parametrize("value", ["no", 0, None])
def test_return_sequences_takes_a_bool_only(value):
  params, xs, *_ = _inputs(2, 3, 4, 5)
  with pytest.raises(ConfigError, match=f"return_sequences must be a bool, got {value!r}; pass True"):
    lstm(params, xs, return_sequences=value)
  with pytest.raises(ConfigError, match="return_sequences must be a bool"):
    LSTM(features=5, return_sequences=value).init(jax.random.key(0), xs)


def test_return_sequences_false_on_an_empty_sequence_is_the_initial_h():
  params, xs, state, *_ = _inputs(2, 0, 4, 5)
  h, (h_last, c_last) = lstm(params, xs, initial_state=state, return_sequences=False)
  for actual, expected in ((h, state[0]), (h_last, state[0]), (c_last, state[1])):
    np.testing.assert_array_equal(actual, expected)


def test_engines_with_final_state_take_return_sequences():
  assert engines.engines_of("lstm")["fused"].final_state
  for cell in cells.CELLS:
    for name, engine in engines.engines_of(cell).items():
      if engine.final_state:
        function = getattr(importlib.import_module(engine.module), cell)
        assert "return_sequences" in inspect.signature(function).parameters, (cell, name)

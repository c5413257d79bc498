"""The ``pallas`` engine against the ``scan`` reference: outputs, final state and gradients.

Off a GPU the kernels run in Pallas' interpret mode, so the shapes stay small. Tolerance for the float32
engine: 1e-5 relative, 1e-4 absolute. All matmuls outside the kernel run at float32 precision
(``jax.default_matmul_precision``) so that the comparison also holds on a GPU, where XLA would
otherwise use TF32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn import LSTM, api, engines
from seqclf.rnn.engines import hoisted, pallas_gpu, scan
from tests import kernel_inputs

RTOL, ATOL = 1e-5, 1e-4


@pytest.fixture(autouse=True)
def interpreted_off_a_gpu(monkeypatch):
  """Off a GPU the GPU kernel engines run in their interpreters only when asked for."""
  monkeypatch.setenv(engines.INTERPRET_ENV, "1")


@pytest.fixture(autouse=True)
def float32_matmuls():
  with jax.default_matmul_precision("float32"):
    yield


def _run(engine, inputs):
  """((loss, (outputs, (h, c))), grads w.r.t. params, xs, h0, c0) of a loss mixing all outputs."""
  masks = dict(
    mask=inputs["mask"],
    input_dropout_mask=inputs["input_dropout_mask"],
    recurrent_dropout_mask=inputs["recurrent_dropout_mask"],
  )

  def loss(params, xs, h0, c0):
    outputs, (h, c) = api.lstm(params, xs, initial_state=(h0, c0), engine=engine, **masks)
    w_outputs, w_h, w_c = inputs["loss_weights"]
    total = jnp.sum(outputs * w_outputs) + jnp.sum(h * w_h) + jnp.sum(c * w_c)
    return total, (outputs, (h, c))

  args = (inputs["params"], inputs["xs"], inputs["h0"], inputs["c0"])
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(*args)


def _assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


@pytest.mark.parametrize(
  "batch, steps, input_size, hidden, mask_kind, dropout",
  [
    (3, 4, 5, 7, None, False),
    (5, 4, 6, 100, "random", True),  # H = 100: padded per gate to 128
    (3, 1, 4, 7, "random", True),  # a single step
    (5, 4, 3, 16, "left", False),  # left padding; H already a power of two
    (17, 3, 4, 9, "random", True),  # two batch blocks (two programs), 15 padded rows
  ],
)
def test_matches_scan(batch, steps, input_size, hidden, mask_kind, dropout):
  inputs = kernel_inputs.random_inputs(batch, steps, input_size, hidden, mask_kind, dropout)
  _assert_trees_close(_run("pallas", inputs), _run("scan", inputs))


@pytest.mark.parametrize("matmul_precision", pallas_gpu.PRECISIONS)
def test_recurrence_matches_reference(matmul_precision):
  """The kernels against their plain-JAX reference at the same precision, through the raw
  `hoisted.Recurrence` contract: hs, cs, gates forward, dz, dh0, dc0 backward."""
  kernels = pallas_gpu.make_recurrence(matmul_precision)
  reference = pallas_gpu.make_reference(matmul_precision)
  steps, batch, hidden = 3, 5, 7
  keys = iter(jax.random.split(jax.random.key(1), 10))

  def normal(*shape):
    return jax.random.normal(next(keys), shape)

  recurrent_kernel = normal(hidden, 4 * hidden)
  c0, recurrent_mask = normal(batch, hidden), normal(batch, hidden)
  step_mask = jax.random.bernoulli(next(keys), 0.7, (steps, batch))
  forward_args = (
    normal(steps, batch, 4 * hidden),
    recurrent_kernel,
    normal(batch, hidden),
    c0,
    step_mask,
    recurrent_mask,
  )
  hs, cs, gates = jax.jit(kernels.forward)(*forward_args)
  _assert_trees_close((hs, cs, gates), reference.forward(*forward_args))

  backward_args = (
    recurrent_kernel,
    gates,
    cs,
    c0,
    step_mask,
    recurrent_mask,
    normal(steps, batch, hidden),
    normal(batch, hidden),
    normal(batch, hidden),
  )
  _assert_trees_close(jax.jit(kernels.backward)(*backward_args), reference.backward(*backward_args))


def _pallas_forward(params, xs, h0, c0, mask, recurrent_dropout_mask=None):
  """The engine's (outputs, (h, c)), jitted."""
  return jax.jit(
    lambda *args: api.lstm(
      *args[:2], initial_state=args[2:4], mask=args[4], recurrent_dropout_mask=args[5], engine="pallas"
    )
  )(params, xs, h0, c0, mask, recurrent_dropout_mask)


def test_padded_rows_do_not_leak():
  """Three rows give the same results alone (13 padded rows) as inside a batch of five."""
  inputs = kernel_inputs.random_inputs(5, 4, 3, 7, "random", dropout=True, seed=2)
  args = [inputs[name] for name in ("params", "xs", "h0", "c0", "mask", "recurrent_dropout_mask")]
  first_three = [args[0]] + [x[:3] for x in args[1:]]
  outputs, (h, c) = _pallas_forward(*first_three)
  outputs_5, (h_5, c_5) = _pallas_forward(*args)
  _assert_trees_close((outputs, h, c), (outputs_5[:3], h_5[:3], c_5[:3]), rtol=1e-6, atol=1e-6)


def test_zero_weight_units_stay_zero():
  """Units with zero weights and bias (what per-gate padding adds) keep h = c = 0 and change nothing."""
  inputs = kernel_inputs.random_inputs(3, 4, 5, 7, "random", seed=3)
  hidden, wide = 7, 16

  def widen(x, axis):
    gates = jnp.stack(jnp.split(x, 4, axis=axis), axis=axis)
    pad = [(0, 0)] * gates.ndim
    pad[axis + 1] = (0, wide - hidden)
    return jnp.concatenate(list(jnp.moveaxis(jnp.pad(gates, pad), axis, 0)), axis=axis)

  params = inputs["params"]
  wide_params = {
    "kernel": widen(params["kernel"], 1),
    "bias": widen(params["bias"], 0),
    "recurrent_kernel": jnp.pad(widen(params["recurrent_kernel"], 1), [(0, wide - hidden), (0, 0)]),
  }
  zeros = jnp.zeros((3, wide - hidden))
  outputs, (h, c) = _pallas_forward(
    wide_params,
    inputs["xs"],
    jnp.concatenate([inputs["h0"], zeros], 1),
    jnp.concatenate([inputs["c0"], zeros], 1),
    inputs["mask"],
  )
  for padded in (outputs[..., hidden:], h[:, hidden:], c[:, hidden:]):
    np.testing.assert_array_equal(padded, 0.0)
  narrow = _pallas_forward(params, inputs["xs"], inputs["h0"], inputs["c0"], inputs["mask"])
  _assert_trees_close((outputs[..., :hidden], (h[:, :hidden], c[:, :hidden])), narrow)


@pytest.mark.parametrize(
  "matmul_precision, atol",
  [
    ("BF16_BF16_F32_X6", ATOL),
    ("tensorfloat32", 1e-2),
    ("bfloat16", 5e-2),
  ],
)
def test_reduced_precision_is_close(matmul_precision, atol):
  inputs = kernel_inputs.random_inputs(3, 4, 5, 7, "random", dropout=True, seed=4)
  engine = hoisted.make_lstm(pallas_gpu.make_recurrence(matmul_precision))
  args = (
    inputs["params"],
    inputs["xs"],
    inputs["h0"],
    inputs["c0"],
    inputs["mask"],
    jnp.ones((3, 5)),
    inputs["recurrent_dropout_mask"],
  )
  expected = scan.lstm(*args)
  _assert_trees_close(jax.jit(engine)(*args), expected, rtol=0.0, atol=atol)


@pytest.mark.parametrize(
  "batch, hidden, matmul_precision",
  [
    (64, 100, "float32"),
    (3, 7, "bfloat16"),
    (17, 64, "BF16_BF16_F32_X6"),
  ],
)
def test_lowers_to_triton(batch, hidden, matmul_precision):
  """Both kernels lower to Triton IR for CUDA, on any host (`seqclf.lowering` names the GPU)."""
  steps, input_size = 5, 8
  engine = hoisted.make_lstm(pallas_gpu.make_recurrence(matmul_precision, interpret=False))
  params = api.init_params(jax.random.key(0), input_size, hidden)
  args = (
    params,
    jnp.zeros((batch, steps, input_size)),
    jnp.zeros((batch, hidden)),
    jnp.zeros((batch, hidden)),
    jnp.ones((batch, steps), bool),
    jnp.ones((batch, input_size)),
    jnp.ones((batch, hidden)),
  )

  def loss(*args):
    outputs, (h, c) = engine(*args)
    return jnp.sum(outputs) + jnp.sum(h) + jnp.sum(c)

  lowered = lowering.lower(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), *args, platform="gpu")
  text = lowered.as_text()
  assert text.count("lstm_forward") >= 1 and text.count("lstm_backward") >= 1


def test_matmul_precision_reaches_the_kernels_from_the_function_and_the_layer():
  """``lstm(..., matmul_precision=)`` and ``LSTM(matmul_precision=)`` run the kernels at that precision."""
  assert engines.engines_of("lstm")["pallas"].matmul_precisions == pallas_gpu.PRECISIONS
  inputs = kernel_inputs.random_inputs(3, 4, 5, 7, "random", seed=5)
  params, xs = inputs["params"], inputs["xs"]
  reference = hoisted.make_lstm(pallas_gpu.make_reference("bfloat16"))
  batch, hidden = 3, 7
  expected = reference(
    params,
    xs,
    jnp.zeros((batch, hidden)),
    jnp.zeros((batch, hidden)),
    inputs["mask"],
    jnp.ones((batch, 5)),
    jnp.ones((batch, hidden)),
  )
  actual = api.lstm(params, xs, mask=inputs["mask"], engine="pallas", matmul_precision="bfloat16")
  _assert_trees_close(actual, expected)
  full = api.lstm(params, xs, mask=inputs["mask"], engine="pallas")
  assert not np.allclose(actual[0], full[0], rtol=0, atol=1e-6)  # bfloat16 operands did round
  layer = LSTM(features=hidden, engine="pallas", matmul_precision="bfloat16")
  _assert_trees_close(layer.apply({"params": params}, xs, mask=inputs["mask"]), expected)


def test_rejects_bad_options():
  with pytest.raises(ConfigError, match="matmul_precision"):
    pallas_gpu.make_recurrence("float16")
  with pytest.raises(ConfigError, match="block_batch"):
    pallas_gpu.make_recurrence(block_batch=24)


def test_block_heuristics():
  assert pallas_gpu.padded_hidden_size(100) == 128
  assert pallas_gpu.padded_hidden_size(7) == 16
  assert pallas_gpu.default_block_batch(64) == 16
  assert pallas_gpu.default_block_batch(100_000) == pallas_gpu.MAX_BLOCK_BATCH

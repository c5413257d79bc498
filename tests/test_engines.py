"""Every engine of every cell equals `scan`, as a cell x engine matrix: outputs, final state and gradients,
with masks (holes, left padding), dropout, padded batches, NaN and infinities, vmap; and `scan` itself
equals PyTorch (float64) and Keras for both cells. The `scan` references are computed once per case and
shared by the engines (`_reference`).

(`pallas` and `mosaic` in interpret mode are in test_pallas_gpu.py and test_mosaic_gpu.py, `cudnn` in
test_cudnn.py; what is particular to one cell in test_lstm_api.py and test_gru.py.)"""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn import CELLS, engines, init_cell_params, lengths_to_mask, rnn

# float32 on CPU: engines differ from the reference only in summation order (and cpu_kernel's polynomial
# exponential, ~1e-7 relative).
RTOL, ATOL = 1e-5, 1e-5
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")
# The engines with a hand-written VJP that run here, of both cells.
FAST = [
  pytest.param(cell, engine, marks=CPU_ONLY if engine == "cpu_kernel" else (), id=f"{cell}-{engine}")
  for cell in CELLS
  for engine in ("fused", "cpu_kernel")
]
WITH_SCAN = [pytest.param(cell, "scan", id=f"{cell}-scan") for cell in CELLS] + FAST
SHAPES = [  # (batch, steps, input, hidden)
  (3, 7, 5, 100),  # H=100 and a batch that is not a multiple of 8
  (5, 1, 4, 6),  # a single step
  (2, 12, 3, 7),
  (19, 6, 5, 20),  # cpu_kernel: two threads, 16 + 3 rows (a full register block and a remainder)
]
# (mask, dropout): no mask, holes with a fully masked row, left padding.
VARIANTS = [(None, False), ("holes", True), ("left", True), ("holes", False)]


def _inputs(cell, batch, steps, input_size, hidden, seed=0):
  """Parameters with non-zero biases, inputs, a random initial state, a mask of each kind, dropout masks."""
  rng = np.random.default_rng(seed)
  params = init_cell_params(CELLS[cell], jax.random.key(seed), input_size, hidden)
  params = {k: v + jnp.asarray(rng.normal(0, 0.1, v.shape), jnp.float32) for k, v in params.items()}
  xs = jnp.asarray(rng.normal(size=(batch, steps, input_size)), jnp.float32)
  state = tuple(jnp.asarray(rng.normal(size=(batch, hidden)), jnp.float32) for _ in CELLS[cell].state_names)
  holes = rng.random((batch, steps)) < 0.7
  holes[-1] = False  # a fully masked row
  lengths = rng.integers(0, steps + 1, batch)
  masks = {"holes": holes, "left": np.arange(steps)[None, :] >= (steps - lengths)[:, None]}
  dropout = {
    "input_dropout_mask": jnp.asarray((rng.random((batch, input_size)) < 0.8) / 0.8, jnp.float32),
    "recurrent_dropout_mask": jnp.asarray((rng.random((batch, hidden)) < 0.8) / 0.8, jnp.float32),
  }
  return params, xs, state, {k: jnp.asarray(v) for k, v in masks.items()}, dropout


def _initial(cell, state):
  return state if len(state) > 1 else state[0]


def _loss_and_grads(cell, engine, params, xs, state, **kwargs):
  def loss(params, xs, state):
    outputs, final = rnn(
      CELLS[cell], params, xs, initial_state=_initial(cell, state), engine=engine, **kwargs
    )
    weights = jnp.linspace(-1.0, 2.0, outputs.shape[-1])
    return jnp.sum(outputs * weights) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(final))

  return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, state)


def _run(cell, engine, params, xs, state, **kwargs):
  call = lambda p, x, s: rnn(CELLS[cell], p, x, initial_state=_initial(cell, s), engine=engine, **kwargs)  # noqa: E731
  return jax.jit(call)(params, xs, state)


def _case(cell, shape, variant):
  params, xs, state, masks, dropout = _inputs(cell, *shape)
  mask_kind, with_dropout = variant
  kwargs = ({"mask": masks[mask_kind]} if mask_kind else {}) | (dropout if with_dropout else {})
  return params, xs, state, kwargs


@functools.cache
def _reference(cell, shape, variant):
  """`scan`'s outputs, state, loss and gradients of one case, computed once for every engine."""
  params, xs, state, kwargs = _case(cell, shape, variant)
  return _run(cell, "scan", params, xs, state, **kwargs), _loss_and_grads(
    cell, "scan", params, xs, state, **kwargs
  )


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell, engine", FAST)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{'dropout' if v[1] else 'plain'}")
def test_engine_equals_scan(cell, engine, shape, variant):
  params, xs, state, kwargs = _case(cell, shape, variant)
  outputs, loss_and_grads = _reference(cell, shape, variant)
  _assert_close(_run(cell, engine, params, xs, state, **kwargs), outputs)
  _assert_close(_loss_and_grads(cell, engine, params, xs, state, **kwargs), loss_and_grads)


@pytest.mark.parametrize("cell, engine", WITH_SCAN)
def test_masked_batch_equals_each_sequence_alone_and_masked_steps_repeat_h(cell, engine):
  """Right padding (lengths), left padding and holes (masks) give each sequence's own run; a masked step
  leaves the state alone and its output repeats the previous h."""
  params = init_cell_params(CELLS[cell], jax.random.key(1), 4, 9)
  lengths = [5, 2, 8]
  seqs = [jax.random.normal(jax.random.key(10 + i), (n, 4)) for i, n in enumerate(lengths)]
  right = jnp.stack([jnp.pad(s, ((0, 8 - len(s)), (0, 0)), constant_values=3.0) for s in seqs])
  left = jnp.stack([jnp.pad(s, ((8 - len(s), 0), (0, 0)), constant_values=-3.0) for s in seqs])
  left_mask = jnp.arange(8)[None] >= (8 - jnp.array(lengths))[:, None]
  run = functools.partial(rnn, CELLS[cell], params, engine=engine)
  _, right_state = run(right, lengths=jnp.array(lengths))
  _, left_state = run(left, mask=left_mask)
  for i, seq in enumerate(seqs):
    alone = jax.tree.leaves(run(seq[None])[1])
    for got in (right_state, left_state):
      _assert_close([s[i] for s in jax.tree.leaves(got)], [s[0] for s in alone])
  holes = jnp.array([[1, 1, 0, 1, 0, 0, 1, 0]] * 3, bool)
  outputs, state = run(right, mask=holes)
  kept, kept_state = run(right[:, jnp.array([0, 1, 3, 6])])
  _assert_close((outputs[:, jnp.array([0, 1, 3, 6])], state), (kept, kept_state))
  _assert_close((outputs[:, 2], outputs[:, 4], outputs[:, 5]), (outputs[:, 1], outputs[:, 3], outputs[:, 3]))
  # lengths= is its right-padding mask
  _assert_close(
    run(right, lengths=jnp.array(lengths)), run(right, mask=lengths_to_mask(jnp.array(lengths), 8))
  )


@pytest.mark.parametrize("cell, engine", [*FAST, *(pytest.param(c, "flax", id=f"{c}-flax") for c in CELLS)])
def test_return_sequences_false_is_the_final_h_of_the_full_run_with_its_gradients(cell, engine):
  params, xs, state, masks, dropout = _inputs(cell, 5, 9, 4, 6)
  kwargs = {} if engine == "flax" else {"mask": masks["left"], **dropout}
  _, full_state = _run(cell, engine, params, xs, state, **kwargs)
  h, final_state = _run(cell, engine, params, xs, state, return_sequences=False, **kwargs)
  assert h.shape == (5, 6)
  np.testing.assert_array_equal(h, jax.tree.leaves(final_state)[0])
  _assert_close(final_state, full_state)
  _assert_close(
    _loss_and_grads(cell, engine, params, xs, state, return_sequences=False, **kwargs),
    _loss_and_grads(cell, "scan", params, xs, state, return_sequences=False, **kwargs),
  )


@pytest.mark.parametrize("cell", list(CELLS))
def test_flax_baseline_equals_scan_and_refuses_masks(cell):
  params, xs, state, masks, dropout = _inputs(cell, 3, 7, 5, 100)
  _assert_close(_run(cell, "flax", params, xs, state), _run(cell, "scan", params, xs, state))
  _assert_close(
    _loss_and_grads(cell, "flax", params, xs, state), _loss_and_grads(cell, "scan", params, xs, state)
  )
  for refused in (
    {"mask": masks["holes"]},
    {"lengths": jnp.array([1, 2, 3])},
    {"input_dropout_mask": dropout["input_dropout_mask"]},
    {"recurrent_dropout_mask": dropout["recurrent_dropout_mask"]},
  ):
    with pytest.raises(ConfigError, match="'flax' has no (padding masks|input dropout|recurrent dropout)"):
      rnn(CELLS[cell], params, xs, engine="flax", **refused)


@pytest.mark.parametrize("cell, engine", [*FAST, *(pytest.param(c, "flax", id=f"{c}-flax") for c in CELLS)])
def test_nan_and_inf_propagate_as_in_scan(cell, engine):
  params, xs, state, _, _ = _inputs(cell, 3, 4, 3, 5)
  xs = xs.at[0, 1, 0].set(jnp.nan).at[1, 2, 1].set(jnp.inf).at[2, 0, 2].set(-jnp.inf)
  expected = _run(cell, "scan", params, xs, state)
  actual = _run(cell, engine, params, xs, state)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
    finite = np.isfinite(e)
    np.testing.assert_allclose(np.asarray(a)[finite], np.asarray(e)[finite], rtol=RTOL, atol=ATOL)
  assert np.isnan(expected[0][0, 1:]).all()  # a NaN input poisons its row from that step on


@CPU_ONLY
@pytest.mark.parametrize("cell", list(CELLS))
def test_cpu_kernel_under_vmap_equals_scan(cell):
  params, xs, state, masks, _ = _inputs(cell, 19, 6, 5, 20)
  stacked = jnp.stack([xs, -xs])

  def run(engine):
    return jax.vmap(
      lambda x: rnn(
        CELLS[cell], params, x, initial_state=_initial(cell, state), mask=masks["holes"], engine=engine
      )
    )

  _assert_close(run("cpu_kernel")(stacked), run("scan")(stacked))


@CPU_ONLY
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("batch, steps", [(0, 3), (2, 0)])
def test_cpu_kernel_handles_an_empty_batch_or_no_steps(cell, batch, steps):
  params, _, _, _, _ = _inputs(cell, 2, 3, 4, 5)
  xs, state = jnp.ones((batch, steps, 4)), (jnp.ones((batch, 5)),) * len(CELLS[cell].state_names)
  _assert_close(_run(cell, "cpu_kernel", params, xs, state), _run(cell, "scan", params, xs, state))
  _assert_close(
    _loss_and_grads(cell, "cpu_kernel", params, xs, state), _loss_and_grads(cell, "scan", params, xs, state)
  )


@pytest.mark.parametrize("cell, engine", FAST)
@pytest.mark.parametrize("batch, steps", [(0, 3), (2, 0)])
def test_engine_function_handles_an_empty_batch_or_no_steps_as_scan(cell, engine, batch, steps):
  # `rnn` answers these calls without an engine; the engine functions themselves (which a model may call
  # directly) must give scan's zero-size outputs, the initial state and its gradients too.
  params, _, _, _, _ = _inputs(cell, 2, 3, 4, 5)
  xs = jnp.ones((batch, steps, 4))
  state = (jnp.full((batch, 5), 0.5),) * len(CELLS[cell].state_names)
  masks = (jnp.ones((batch, steps), bool), jnp.ones((batch, 4)), jnp.ones((batch, 5)))

  def outputs_and_grads(name):
    run = engines.function(name, cell)

    def loss(params, xs, state):
      outputs, final = run(params, xs, state, *masks)
      return jnp.sum(outputs) + sum(jnp.sum(jnp.sin(s)) for s in final)

    return run(params, xs, state, *masks), jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, state)

  _assert_close(outputs_and_grads(engine), outputs_and_grads("scan"))


@pytest.mark.parametrize("cell, engine", [*FAST, *(pytest.param(c, "flax", id=f"{c}-flax") for c in CELLS)])
def test_engine_equals_scan_on_inputs_of_width_0(cell, engine):
  # No input features is a valid recurrence: the state evolves from the bias and the recurrent kernel.
  params, _, state, _, _ = _inputs(cell, 3, 4, 0, 5)
  xs = jnp.zeros((3, 4, 0))
  _assert_close(_run(cell, engine, params, xs, state), _run(cell, "scan", params, xs, state))
  _assert_close(
    _loss_and_grads(cell, engine, params, xs, state), _loss_and_grads(cell, "scan", params, xs, state)
  )


# --- scan against PyTorch and Keras ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
def test_scan_equals_pytorch_in_float64(cell):
  torch = pytest.importorskip("torch")
  batch, steps, input_size, hidden = 3, 9, 4, 6
  torch.manual_seed(0)
  layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](input_size, hidden, batch_first=True).double()
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(batch, steps, input_size))
  state = tuple(rng.normal(size=(batch, hidden)) for _ in CELLS[cell].state_names)
  torch_state = tuple(torch.from_numpy(s)[None] for s in state)
  torch_state = torch_state if len(torch_state) > 1 else torch_state[0]
  lengths = np.array([9, 5, 1])
  with torch.no_grad():
    expected, expected_state = layer(torch.from_numpy(xs), torch_state)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(xs), lengths, batch_first=True)
    packed_out, packed_state = layer(packed, torch_state)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=steps)

  def ours(torch_tensors):
    parts = torch_tensors if isinstance(torch_tensors, tuple) else (torch_tensors,)
    return tuple(p[0].numpy() for p in parts)

  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), CELLS[cell].from_torch(layer.state_dict()))
    initial = _initial(cell, tuple(jnp.asarray(s) for s in state))
    outputs, final = rnn(CELLS[cell], params, jnp.asarray(xs), initial_state=initial, engine="scan")
    np.testing.assert_allclose(outputs, expected.numpy(), rtol=1e-12, atol=1e-12)
    _assert_tree(final, ours(expected_state))
    # Packed sequences: the same final state; PyTorch's outputs are zeros where ours repeat h.
    outputs, final = rnn(
      CELLS[cell], params, jnp.asarray(xs), initial_state=initial, lengths=jnp.asarray(lengths), engine="scan"
    )
    _assert_tree(final, ours(packed_state))
    mask = np.arange(steps)[None, :, None] < lengths[:, None, None]
    np.testing.assert_allclose(np.asarray(outputs) * mask, padded.numpy(), rtol=1e-12, atol=1e-12)


def _assert_tree(actual, expected_parts):
  for a, e in zip(jax.tree.leaves(actual), expected_parts, strict=True):
    np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def _keras():
  if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed (extra peers)")
  os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras reads it once, at its first import
  import keras  # noqa: PLC0415

  if keras.backend.backend() != "jax":
    pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend")
  return keras


@pytest.mark.parametrize("cell", list(CELLS))
def test_scan_equals_keras(cell):
  keras = _keras()
  batch, steps, input_size, hidden = 3, 8, 4, 5
  layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell](
    hidden, return_sequences=True, return_state=True
  )
  rng = np.random.default_rng(1)
  xs = rng.normal(size=(batch, steps, input_size)).astype(np.float32)
  state = [rng.normal(size=(batch, hidden)).astype(np.float32) for _ in CELLS[cell].state_names]
  layer.build((batch, steps, input_size))
  weights = layer.get_weights()
  weights[2] = rng.normal(0, 0.3, weights[2].shape).astype(np.float32)  # non-zero biases (both GRU rows)
  layer.set_weights(weights)
  params = CELLS[cell].from_keras(layer.get_weights())
  mask = np.ones((batch, steps), bool)
  mask[1, 5:] = False  # right padding
  mask[2, :3] = False  # left padding
  initial = _initial(cell, tuple(jnp.asarray(s) for s in state))
  for kwargs in ({}, {"mask": mask}):
    expected, *expected_state = layer(xs, initial_state=state, **kwargs)
    outputs, final = rnn(CELLS[cell], params, jnp.asarray(xs), initial_state=initial, engine="scan", **kwargs)
    for a, e in zip(jax.tree.leaves(final), expected_state, strict=True):
      np.testing.assert_allclose(a, np.asarray(e), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs, np.asarray(expected), rtol=1e-5, atol=1e-5)

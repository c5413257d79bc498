"""The ``cudnn`` engine against the ``scan`` reference, on the cases cuDNN supports.

cuDNN needs a GPU. Without one, two tests still cover everything but cuDNN itself, using
`jax.experimental.rnn.lstm_ref`, the pure-JAX model of cuDNN's LSTM: one checks our weight packing, the
other runs the engine's wrapper with ``lstm_ref`` standing in for cuDNN.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from seqclf.rnn import api
from seqclf.rnn.engines import cudnn, scan

RTOL, ATOL = 1e-5, 1e-4
BATCH, STEPS, INPUT_SIZE = 5, 6, 4
# Right padding only; 0 is an empty row.
LENGTHS = np.array([6, 3, 1, 0, 5], np.int32)

needs_gpu = pytest.mark.skipif(
  jax.default_backend() != "gpu",
  reason=f"cudnn engine needs a GPU; jax.default_backend() is {jax.default_backend()}",
)


@pytest.fixture(autouse=True)
def float32_matmuls():
  with jax.default_matmul_precision("float32"):
    yield


def _inputs(hidden, seed=0):
  """Parameters (non-zero bias), inputs, initial state, input dropout mask and loss weights."""
  rng = np.random.default_rng(seed)
  params = api.init_params(jax.random.key(seed), INPUT_SIZE, hidden)
  params["bias"] = params["bias"] + jnp.asarray(rng.normal(0, 0.3, 4 * hidden), jnp.float32)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  input_dropout_mask = jnp.asarray((rng.random((BATCH, INPUT_SIZE)) < 0.7) / 0.7, jnp.float32)
  return (
    params,
    normal(BATCH, STEPS, INPUT_SIZE),
    normal(BATCH, hidden),
    normal(BATCH, hidden),
    input_dropout_mask,
    (normal(BATCH, STEPS, hidden), normal(BATCH, hidden), normal(BATCH, hidden)),
  )


def _value_and_grads(engine_fn, inputs):
  """((loss, (outputs, (h, c))), grads w.r.t. params, xs, h0, c0) for an engine-signature function."""
  params, xs, h0, c0, input_dropout_mask, (w_outputs, w_h, w_c) = inputs
  hidden = h0.shape[1]
  step_mask = api.lengths_to_mask(LENGTHS, STEPS)

  def loss(params, xs, h0, c0):
    outputs, (h, c) = engine_fn(params, xs, h0, c0, step_mask, input_dropout_mask, jnp.ones((BATCH, hidden)))
    return jnp.sum(outputs * w_outputs) + jnp.sum(h * w_h) + jnp.sum(c * w_c), (outputs, (h, c))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(params, xs, h0, c0)


def _assert_trees_close(actual, expected):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), actual, expected)


def _lstm_ref_as_cudnn(
  x,
  h_0,
  c_0,
  weights,
  seq_lengths,
  input_size,
  hidden_size,
  num_layers,
  dropout,
  bidirectional,
  precision=None,
):
  """`rnn.lstm`'s signature and results, computed by `rnn.lstm_ref` from the same packed weights."""
  del precision
  unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
  return rnn.lstm_ref(
    x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional
  )


@pytest.mark.parametrize("hidden", [7, 100])
def test_packed_weights_run_like_scan(hidden):
  """cuDNN's layout, as `rnn.unpack_lstm_weights` reads it, holds our weights: `lstm_ref` matches scan."""
  params, xs, h0, c0, _, _ = _inputs(hidden)
  lengths = np.maximum(LENGTHS, 1)  # lstm_ref has no empty rows
  ys, h_n, c_n = _lstm_ref_as_cudnn(
    xs,
    h0[None],
    c0[None],
    cudnn.pack_weights(params),
    jnp.asarray(lengths),
    INPUT_SIZE,
    hidden,
    1,
    0.0,
    False,
  )
  step_mask = api.lengths_to_mask(lengths, STEPS)
  outputs, (h, c) = scan.lstm(
    params, xs, h0, c0, step_mask, jnp.ones((BATCH, INPUT_SIZE)), jnp.ones((BATCH, hidden))
  )
  _assert_trees_close((h_n[0], c_n[0]), (h, c))
  # cuDNN's outputs past a row's length are zeros, not the contract's repeated h: compare valid steps.
  valid = step_mask[:, :, None]
  _assert_trees_close(jnp.where(valid, ys, 0.0), jnp.where(valid, outputs, 0.0))


def test_wrapper_matches_scan_with_lstm_ref_for_cudnn(monkeypatch):
  """The engine around cuDNN (lengths, empty rows, padded outputs, input dropout, gradients), with
  `lstm_ref` standing in for cuDNN."""
  monkeypatch.setattr(rnn, "lstm", _lstm_ref_as_cudnn)
  inputs = _inputs(hidden=7, seed=1)
  _assert_trees_close(_value_and_grads(cudnn.lstm, inputs), _value_and_grads(scan.lstm, inputs))


def test_inputs_of_width_0_reach_cudnn_as_one_zero_feature_and_match_scan(monkeypatch):
  """cuDNN documents no inputs of width 0: the wrapper passes one zero feature against a zero kernel row."""
  widths = set()

  def recording_width(x, *args, **kwargs):
    widths.add(x.shape[-1])
    return _lstm_ref_as_cudnn(x, *args, **kwargs)

  monkeypatch.setattr(rnn, "lstm", recording_width)
  params, _, h0, c0, _, loss_weights = _inputs(hidden=7, seed=4)
  params = {**params, "kernel": params["kernel"][:0]}
  inputs = (params, jnp.zeros((BATCH, STEPS, 0)), h0, c0, jnp.ones((BATCH, 0)), loss_weights)
  _assert_trees_close(_value_and_grads(cudnn.lstm, inputs), _value_and_grads(scan.lstm, inputs))
  assert widths == {1}


@needs_gpu
@pytest.mark.parametrize("hidden", [7, 100])
def test_matches_scan_on_gpu(hidden):
  inputs = _inputs(hidden, seed=2)
  _assert_trees_close(
    _value_and_grads(cudnn.lstm, inputs),
    _value_and_grads(scan.lstm, inputs),
  )


@needs_gpu
def test_api_lengths_on_gpu():
  params, xs, h0, c0, _, _ = _inputs(hidden=16, seed=3)
  expected = api.lstm(params, xs, initial_state=(h0, c0), lengths=LENGTHS, engine="scan")
  _assert_trees_close(api.lstm(params, xs, initial_state=(h0, c0), lengths=LENGTHS, engine="cudnn"), expected)

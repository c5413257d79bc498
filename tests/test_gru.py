"""What is particular to the GRU: its equations, hard_sigmoid gates, Keras' initialisation, the refusals of
LSTM-only engines and of bad inputs, the C++ kernel's bf16 products and its handlers' buffer checks. Every
engine of both cells against `scan`, and `scan` against PyTorch and Keras, is the matrix of
test_engines.py."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn import engines, gru, init_gru_params
from seqclf.rnn.engines import cpu_kernel, scan
from tests import bf16_products

RTOL, ATOL = 1e-5, 1e-5
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")
SHAPES = [  # (batch, steps, input, hidden)
  (3, 7, 5, 100),  # H=100 and a batch that is not a multiple of 8
  (5, 1, 4, 6),  # a single step
  (19, 6, 5, 20),  # cpu_kernel: two threads, 16 + 3 rows
]


def _inputs(batch, steps, input_size, hidden, mask_kind="holes", seed=0):
  rng = np.random.default_rng(seed)
  params = init_gru_params(jax.random.key(seed), input_size, hidden)
  params["bias"] = jnp.asarray(rng.normal(0, 0.3, (2, 3 * hidden)), jnp.float32)
  xs = jnp.asarray(rng.normal(size=(batch, steps, input_size)), jnp.float32)
  h0 = jnp.asarray(rng.normal(size=(batch, hidden)), jnp.float32)
  if mask_kind == "holes":
    mask = rng.random((batch, steps)) < 0.7
    mask[-1] = False  # a fully masked row
  else:  # left padding
    lengths = rng.integers(0, steps + 1, batch)
    mask = np.arange(steps)[None, :] >= (steps - lengths)[:, None]
  input_mask = jnp.asarray((rng.random((batch, input_size)) < 0.8) / 0.8, jnp.float32)
  recurrent_mask = jnp.asarray((rng.random((batch, hidden)) < 0.8) / 0.8, jnp.float32)
  return params, xs, h0, jnp.asarray(mask), input_mask, recurrent_mask


def _loss_and_grads(engine, params, xs, h0, **kwargs):
  def loss(params, xs, h0):
    outputs, h = gru(params, xs, initial_state=h0, engine=engine, **kwargs)
    weights = jnp.linspace(-1.0, 2.0, outputs.shape[-1])
    return jnp.sum(outputs * weights) + jnp.sum(jnp.sin(h))

  return jax.value_and_grad(loss, argnums=(0, 1, 2))(params, xs, h0)


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def test_reference_matches_the_equations_by_hand():
  params, xs, h0, _, _, _ = _inputs(2, 1, 3, 4)
  w, u, (b, b_rec) = (np.asarray(params[k], np.float64) for k in ("kernel", "recurrent_kernel", "bias"))
  x, h = np.asarray(xs[:, 0], np.float64), np.asarray(h0, np.float64)
  sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
  xw, hu = np.split(x @ w + b, 3, axis=-1), np.split(h @ u + b_rec, 3, axis=-1)
  z, r = sigmoid(xw[0] + hu[0]), sigmoid(xw[1] + hu[1])
  n = np.tanh(xw[2] + r * hu[2])
  expected = z * h + (1 - z) * n
  outputs, h_last = gru(params, xs, initial_state=h0, engine="scan")
  np.testing.assert_allclose(h_last, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(outputs[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_hard_sigmoid_gates_are_what_scan_computes_by_hand():
  params, xs, h0, _, _, _ = _inputs(2, 1, 3, 4)
  w, u, (b, b_rec) = (np.asarray(params[k], np.float64) for k in ("kernel", "recurrent_kernel", "bias"))
  x, h = np.asarray(xs[:, 0], np.float64), np.asarray(h0, np.float64)
  hard = lambda a: np.clip(0.2 * a + 0.5, 0.0, 1.0)  # noqa: E731
  xw, hu = np.split(x @ w + b, 3, axis=-1), np.split(h @ u + b_rec, 3, axis=-1)
  z, r = hard(xw[0] + hu[0]), hard(xw[1] + hu[1])
  expected = z * h + (1 - z) * np.tanh(xw[2] + r * hu[2])
  _, h_last = gru(params, xs, initial_state=h0, engine="scan", recurrent_activation="hard_sigmoid")
  np.testing.assert_allclose(h_last, expected, rtol=1e-5, atol=1e-6)
  _, h_sigmoid = gru(params, xs, initial_state=h0, engine="scan")
  assert np.abs(np.asarray(h_sigmoid) - expected).max() > 1e-3  # the activation is not ignored


def test_hard_sigmoid_fused_equals_scan_with_its_gradients():
  params, xs, h0, mask, input_mask, recurrent_mask = _inputs(3, 6, 4, 5)
  params["kernel"] = 3 * params["kernel"]  # pre-activations past +-2.5, where the gate is clipped
  kwargs = dict(
    mask=mask,
    input_dropout_mask=input_mask,
    recurrent_dropout_mask=recurrent_mask,
    recurrent_activation="hard_sigmoid",
  )
  _assert_close(
    _loss_and_grads("fused", params, xs, h0, **kwargs), _loss_and_grads("scan", params, xs, h0, **kwargs)
  )


@pytest.mark.parametrize("engine", [pytest.param("cpu_kernel", marks=CPU_ONLY), "flax"])
def test_hard_sigmoid_is_refused_by_the_gru_engines_without_it(engine):
  params, xs, _, _, _, _ = _inputs(2, 3, 4, 5)
  with pytest.raises(
    ConfigError,
    match=f"GRU engine '{engine}' has no recurrent_activation='hard_sigmoid'; use engine 'scan' or 'fused'",
  ):
    gru(params, xs, engine=engine, recurrent_activation="hard_sigmoid")


def test_a_gru_model_with_hard_sigmoid_gates_uses_them_or_is_refused():
  """The article_faithful config with --variants=gru trained plain sigmoid gates without a word."""
  from seqclf import models

  tokens = jnp.ones((2, 5), jnp.int32)
  sigmoid, hard = (
    models.create("gru", vocab_size=10, lstm_features=4, engine="scan", recurrent_activation=gates)
    for gates in ("sigmoid", "hard_sigmoid")
  )
  variables = sigmoid.init(jax.random.key(0), tokens)
  # Embeddings of +-2 rather than Keras' +-0.05: pre-activations where the two gate functions part.
  variables["params"]["embedding"] = 40 * variables["params"]["embedding"]
  assert np.abs(np.asarray(sigmoid.apply(variables, tokens) - hard.apply(variables, tokens))).max() > 1e-4
  with pytest.raises(ConfigError, match="has no recurrent_activation='hard_sigmoid'"):
    models.check_fields(
      {"cell": "gru", "engine": "cpu_kernel", "recurrent_activation": "hard_sigmoid"}, platform="cpu"
    )


def test_keras_initialisation():
  params = init_gru_params(jax.random.key(0), 7, 5)
  assert {k: v.shape for k, v in params.items()} == {
    "kernel": (7, 15),
    "recurrent_kernel": (5, 15),
    "bias": (2, 15),
  }
  np.testing.assert_array_equal(params["bias"], 0.0)
  u = np.asarray(params["recurrent_kernel"])
  np.testing.assert_allclose(u @ u.T, np.eye(5), atol=1e-5)  # orthogonal rows
  limit = np.sqrt(6 / (7 + 15))
  assert np.abs(params["kernel"]).max() <= limit


def test_an_lstm_only_engine_is_refused_naming_the_gru_engines():
  params, xs, _, _, _, _ = _inputs(2, 3, 4, 5)
  with pytest.raises(
    ConfigError,
    match="unknown GRU engine 'pallas' \\(it has no GRU; it runs LSTM\\); choose one of: auto, scan, fused, cpu_kernel, flax",
  ):
    gru(params, xs, engine="pallas")
  assert engines.check_engine("auto", "gpu", cell="gru") == "fused"


@pytest.mark.parametrize(
  "change, message",
  [
    (
      lambda a: {**a, "xs": a["xs"][0]},
      "gru\\(\\): xs must be \\[batch, steps, features\\] \\(rank 3\\), got shape \\[3, 4\\]",
    ),
    (
      lambda a: {**a, "xs": a["xs"][..., :3]},
      "xs has 3 features per step but params\\['kernel'\\] is \\[4, 15\\]",
    ),
    (
      lambda a: {**a, "params": {**a["params"], "bias": a["params"]["bias"][0]}},
      "params\\['bias'\\] must be \\[2, 15\\] .* got \\[15\\]",
    ),
    (
      lambda a: {**a, "params": {"kernel": a["params"]["kernel"]}},
      "params must be a mapping with kernel, recurrent_kernel and bias",
    ),
    (
      lambda a: {**a, "initial_state": jnp.zeros((2, 4))},
      "initial_state h0 must be \\[2, 5\\] .* got \\[2, 4\\]",
    ),
    (lambda a: {**a, "mask": jnp.ones((2, 4), bool)}, "mask must be \\[2, 3\\] .* got \\[2, 4\\]"),
    (lambda a: {**a, "lengths": jnp.array([1, 4])}, "lengths must lie in \\[0, 3\\]"),
    (lambda a: {**a, "lengths": jnp.array([1.0, 2.0])}, "lengths must be integers"),
    (lambda a: {**a, "lengths": jnp.array([1, 2]), "mask": jnp.ones((2, 3), bool)}, "either mask or lengths"),
    (
      lambda a: {**a, "recurrent_dropout_mask": jnp.ones((2, 4))},
      "recurrent_dropout_mask must be \\[2, 5\\]",
    ),
  ],
)
def test_bad_inputs_are_one_config_error(change, message):
  params, xs, _, _, _, _ = _inputs(2, 3, 4, 5)
  call = change({"params": params, "xs": xs})
  with pytest.raises(ConfigError, match=message):
    gru(call.pop("params"), call.pop("xs"), **call)


def test_cpu_kernel_refuses_other_dtypes():
  params, xs, _, _, _, _ = _inputs(2, 3, 4, 5)
  with pytest.raises(ConfigError, match="GRU engine 'cpu_kernel' computes in float32, not bfloat16"):
    gru(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), xs.astype(jnp.bfloat16), engine="cpu_kernel")


# bfloat16 products: the kernel rounds the operands of the step's products (x @ W and h @ U forward, dz @ W^T
# and dz @ U^T backward) to bfloat16 and sums in float32; the weight gradient stays float32. This reference
# does the same in plain JAX.
_bf16_product = bf16_products.product(weight_gradient="float32")


def _bf16_reference(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
  hidden = h0.shape[1]

  def step(h, inputs):
    x_t, keep = inputs
    xw = _bf16_product(x_t * input_dropout_mask, params["kernel"]) + params["bias"][0]
    hu = _bf16_product(h * recurrent_dropout_mask, params["recurrent_kernel"]) + params["bias"][1]
    z = jax.nn.sigmoid(xw[:, :hidden] + hu[:, :hidden])
    r = jax.nn.sigmoid(xw[:, hidden : 2 * hidden] + hu[:, hidden : 2 * hidden])
    n = jnp.tanh(xw[:, 2 * hidden :] + r * hu[:, 2 * hidden :])
    h_new = jnp.where(keep[:, None], z * h + (1 - z) * n, h)
    return h_new, h_new

  h, hs = jax.lax.scan(step, h0, (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(step_mask, 0, 1)))
  return jnp.swapaxes(hs, 0, 1), h


@CPU_ONLY
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_kernel_bf16_products_round_like_the_reference_and_stay_near_float32(shape):
  """As the LSTM's (tests/test_cpu_kernel.py): equal to the reference that rounds like the kernel up to
  float32 summation order, near float32 `scan` within bfloat16's tolerance, and not float32."""
  if not cpu_kernel.has_bf16_products():
    pytest.skip("this CPU has no AVX512-BF16")
  params, xs, h0, mask, input_mask, recurrent_mask = _inputs(*shape)
  masks = (mask, input_mask, recurrent_mask)

  def outputs_and_grads(run):
    def loss(params, xs, h0):
      outputs, h = run(params, xs, h0, *masks)
      return jnp.sum(outputs * jnp.linspace(-1.0, 2.0, outputs.shape[-1])) + jnp.sum(jnp.sin(h))

    return run(params, xs, h0, *masks), jax.grad(loss, argnums=(0, 1, 2))(params, xs, h0)

  def assert_within(actual, expected, outputs_atol, grads_fraction):
    for a, e in zip(jax.tree.leaves(actual[0]), jax.tree.leaves(expected[0])):
      np.testing.assert_allclose(a, e, rtol=0, atol=outputs_atol)
    for a, e in zip(jax.tree.leaves(actual[1]), jax.tree.leaves(expected[1])):
      np.testing.assert_allclose(a, e, rtol=0, atol=grads_fraction * float(np.abs(e).max()))

  actual = outputs_and_grads(functools.partial(cpu_kernel.gru, matmul_precision="bfloat16"))
  assert_within(actual, outputs_and_grads(_bf16_reference), outputs_atol=1e-4, grads_fraction=1e-3)
  assert_within(actual, outputs_and_grads(scan.gru), outputs_atol=2e-2, grads_fraction=0.1)
  float32 = outputs_and_grads(cpu_kernel.gru)
  assert not np.allclose(actual[0][0], float32[0][0], rtol=0, atol=1e-5)  # the products really are bf16


def test_cpu_kernel_bf16_through_the_public_gru_and_its_refusals(monkeypatch):
  params, xs, *_ = _inputs(3, 4, 5, 6)
  with pytest.raises(ConfigError, match="GRU engine 'fused' has no matmul_precision='bfloat16'"):
    gru(params, xs, engine="fused", matmul_precision="bfloat16")
  if jax.default_backend() == "cpu" and cpu_kernel.has_bf16_products():
    outputs, _ = gru(params, xs, engine="auto", matmul_precision="bfloat16")
    np.testing.assert_allclose(outputs, gru(params, xs, engine="scan")[0], atol=2e-2)
  monkeypatch.setattr(cpu_kernel, "has_bf16_products", lambda: False)
  with pytest.raises(
    ConfigError, match="GRU engine 'cpu_kernel' computes matmul_precision='bfloat16' with AVX"
  ):
    cpu_kernel.make_gru(matmul_precision="bfloat16")


def _gru_call(target, out_shapes, arguments):
  return jax.block_until_ready(
    cpu_kernel._call(target, out_shapes, *arguments, num_threads=1, bf16=False)  # noqa: SLF001 -- below the api's checks
  )


def _gru_forward_arguments():
  params, xs, h0, mask, input_mask, recurrent_mask = _inputs(3, 5, 4, 6)
  weights = (params["kernel"], params["recurrent_kernel"], params["bias"])
  return [xs, *weights, h0, mask, input_mask, recurrent_mask]


GRU_FORWARD_MISMATCHES = {
  # argument index (or "result N") -> a buffer that disagrees with xs [3, 5, 4] and h0 [3, 6], the words
  "narrower kernel": (1, jnp.zeros((3, 18)), "seqclf_gru_forward: kernel is [3, 18], expected [4, 18]"),
  "recurrent kernel of 4 gates": (2, jnp.zeros((6, 24)), "recurrent_kernel is [6, 24], expected [6, 18]"),
  "one bias row": (3, jnp.zeros((18,)), "bias is [18], expected [2, 18]"),
  "short step mask": (5, jnp.ones((3, 2), bool), "step_mask is [3, 2], expected [3, 5]"),
  "recurrent dropout mask": (7, jnp.ones((3, 5)), "recurrent_dropout_mask is [3, 5], expected [3, 6]"),
  "rank 2 xs": (0, jnp.zeros((3, 4)), "xs must be rank 3"),
}


@CPU_ONLY
@pytest.mark.parametrize("case", list(GRU_FORWARD_MISMATCHES))
def test_cpu_kernel_forward_refuses_each_buffer_that_disagrees_by_name(case):
  index, buffer, words = GRU_FORWARD_MISMATCHES[case]
  arguments = _gru_forward_arguments()
  arguments[index] = buffer
  with pytest.raises(Exception, match=re.escape(words)):
    _gru_call("seqclf_gru_forward", [(3, 5, 6), (3, 5, 64)], arguments)


@CPU_ONLY
@pytest.mark.parametrize(
  "target, results, words",
  [
    ("seqclf_gru_forward", [(3, 5, 6), (3, 5, 48)], "gates (result) is [3, 5, 48], expected [3, 5, 64]"),
    ("seqclf_gru_forward", [(3, 4, 6), (3, 5, 64)], "hs (result) is [3, 4, 6], expected [3, 5, 6]"),
    ("seqclf_gru_inference", [(3, 5, 5)], "seqclf_gru_inference: hs (result) is [3, 5, 5]"),
  ],
)
def test_cpu_kernel_forward_refuses_results_of_the_wrong_size(target, results, words):
  with pytest.raises(Exception, match=re.escape(words)):
    _gru_call(target, results, _gru_forward_arguments())


def _gru_backward_results():
  return [(3, 5, 4), (3, 6), (4, 18), (6, 18), (2, 18)]


@CPU_ONLY
def test_cpu_kernel_backward_runs_buffers_that_fit():
  xs, kernel, recurrent_kernel, bias, h0, mask, input_mask, recurrent_mask = _gru_forward_arguments()
  hs, gates = _gru_call("seqclf_gru_forward", [(3, 5, 6), (3, 5, 64)], _gru_forward_arguments())
  arguments = [xs, kernel, recurrent_kernel, h0, mask, input_mask, recurrent_mask, hs, gates, hs, h0]
  assert all(
    np.all(np.isfinite(g)) for g in _gru_call("seqclf_gru_backward", _gru_backward_results(), arguments)
  )


GRU_BACKWARD_MISMATCHES = {
  # (argument index or result index, the wrong shape, the words)
  "dhs with too few steps": (
    "argument",
    9,
    (3, 2, 6),
    "seqclf_gru_backward: dhs is [3, 2, 6], expected [3, 5, 6]",
  ),
  "gates of another width": ("argument", 8, (3, 5, 48), "gates is [3, 5, 48], expected [3, 5, 64]"),
  "dh_last of another batch": ("argument", 10, (2, 6), "dh_last is [2, 6], expected [3, 6]"),
  "dxs": ("result", 0, (3, 5, 3), "dxs (result) is [3, 5, 3], expected [3, 5, 4]"),
  "dh0": ("result", 1, (3, 5), "dh0 (result) is [3, 5], expected [3, 6]"),
  "d_kernel": ("result", 2, (3, 18), "d_kernel (result) is [3, 18], expected [4, 18]"),
  "d_recurrent_kernel": ("result", 3, (6, 12), "d_recurrent_kernel (result) is [6, 12], expected [6, 18]"),
  "d_bias": ("result", 4, (18,), "d_bias (result) is [18], expected [2, 18]"),
}


@CPU_ONLY
@pytest.mark.parametrize("case", list(GRU_BACKWARD_MISMATCHES))
def test_cpu_kernel_backward_refuses_each_buffer_that_disagrees_by_name(case):
  """Every argument and each of the five gradient outputs is held to the sizes of xs and h0."""
  kind, index, shape, words = GRU_BACKWARD_MISMATCHES[case]
  xs, kernel, recurrent_kernel, _, h0, mask, input_mask, recurrent_mask = _gru_forward_arguments()
  state, gates = jnp.zeros((3, 5, 6)), jnp.zeros((3, 5, 64))
  arguments = [xs, kernel, recurrent_kernel, h0, mask, input_mask, recurrent_mask, state, gates, state, h0]
  results = _gru_backward_results()
  if kind == "argument":
    arguments[index] = jnp.zeros(shape)
  else:
    results[index] = shape
  with pytest.raises(Exception, match=re.escape(words)):
    _gru_call("seqclf_gru_backward", results, arguments)

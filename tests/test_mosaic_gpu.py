"""The ``mosaic`` engine against ``scan`` and its own plain-JAX reference, and lowered for CUDA.

Off a GPU the kernels run in the Mosaic GPU interpreter (jax >= 0.11), which proves the whole kernel
body at cluster sizes 1 (no exchange) and 2 (the exchange through global memory). The exchange through
distributed shared memory, which the interpreter lacks, and every configuration a GPU runs are proven
by lowering for CUDA on this host (`seqclf.lowering`). Interpreted kernels are slow, so the shapes stay
small. All matmuls outside the kernels run at float32 precision.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn import api, engines
from seqclf.rnn.engines import hoisted, mosaic_gpu, scan
from tests import kernel_inputs

# "float32" (three bf16 products) against float32 scan: as tight as the pallas engine's float32.
RTOL, ATOL = 1e-5, 1e-4
# "bfloat16" operands against float32 scan (T <= 4, Keras init): the rounding of h and U each step.
BF16_ATOL = 3e-2

needs_mosaic = pytest.mark.skipif(
  mosaic_gpu.unavailable_reason() is not None, reason=str(mosaic_gpu.unavailable_reason())
)


@pytest.fixture(autouse=True)
def interpreted_off_a_gpu(monkeypatch):
  """Off a GPU the GPU kernel engines run in their interpreters only when asked for."""
  monkeypatch.setenv(engines.INTERPRET_ENV, "1")


@pytest.fixture(autouse=True)
def float32_matmuls():
  with jax.default_matmul_precision("float32"):
    yield


def _inputs(batch, steps, input_size, hidden, mask_kind=None, dropout=False, seed=0):
  """Engine-signature arguments (dropout masks of ones without ``dropout``) and loss weights."""
  inputs = kernel_inputs.random_inputs(batch, steps, input_size, hidden, mask_kind, dropout, seed)
  ones = {"input_dropout_mask": (batch, input_size), "recurrent_dropout_mask": (batch, hidden)}
  masks = [
    jnp.ones(shape, jnp.float32) if inputs[key] is None else inputs[key] for key, shape in ones.items()
  ]
  args = (*(inputs[key] for key in ("params", "xs", "h0", "c0", "mask")), *masks)
  return args, inputs["loss_weights"]


def _run(lstm, args, weights):
  """(outputs, (h, c)) and the gradients w.r.t. params, xs, h0, c0 of a loss mixing all outputs."""

  def loss(params, xs, h0, c0):
    outputs, (h, c) = lstm(params, xs, h0, c0, *args[4:])
    total = jnp.sum(outputs * weights[0]) + jnp.sum(h * weights[1]) + jnp.sum(c * weights[2])
    return total, (outputs, (h, c))

  (_, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(*args[:4])
  return outputs, grads


def _scan(*args):
  return scan.lstm(*args)


@functools.cache
def _scan_reference(shape, with_gradients=True):
  """Scan's outputs (and gradients) at `_inputs(*shape)`, computed once for every cluster size and test."""
  args, weights = _inputs(*shape)
  return _run(_scan, args, weights) if with_gradients else _scan(*args)


def _engine(matmul_precision, cluster_size, **options):
  return mosaic_gpu.make_lstm(matmul_precision, cluster_size=cluster_size, **options)


def _reference(matmul_precision):
  return hoisted.make_lstm(mosaic_gpu.make_reference(matmul_precision))


def _assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


def _cluster_sizes(matmul_precision):
  """What a test runs: the interpreter (CPU) N = 1 and 2 (`INTERPRET_CLUSTER_SIZE`; no shared-memory
  limit there), a GPU every cluster size that fits."""
  if jax.default_backend() != "gpu":
    return [1, 2]
  return [n for n in mosaic_gpu.CLUSTER_SIZES if mosaic_gpu.fits(n, matmul_precision)]


SHAPES = [
  # batch, steps, input_size, hidden, mask_kind, dropout
  (13, 4, 5, 100, "random", True),  # B not a multiple of 8, H = 100 padded to 128, holes, dropout
  (5, 1, 4, 7, "random", True),  # a single step
  (6, 3, 3, 16, "left", False),  # left padding
  (70, 2, 4, 9, None, False),  # two batch blocks (two clusters), 58 padded rows
]


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("float32"))
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_scan(shape, cluster_size):
  """Three-product bf16 ("float32") kernels equal the float32 scan engine. Interpreted: N = 1 (no
  exchange) and N = 2 (the exchange through global memory)."""
  args, weights = _inputs(*shape)
  _assert_trees_close(_run(_engine("float32", cluster_size), args, weights), _scan_reference(shape))


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("float32"))
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_kernels_without_gradient_match_scan(shape, cluster_size):
  """Without a gradient: the kernel that stores only h (`inference`) and the one that stores only the
  final state (`final_state`) give scan's outputs and final state, holes, left padding and dropout
  included (a masked row's final state is the state at its last real step)."""
  args, _ = _inputs(*shape)
  lstm = _engine("float32", cluster_size)
  outputs, state = _scan_reference(shape, with_gradients=False)
  _assert_trees_close(jax.jit(lstm)(*args), (outputs, state))
  _assert_trees_close(jax.jit(lambda *a: lstm(*a, return_sequences=False))(*args), (state[0], state))


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("bfloat16"))
def test_bfloat16_matches_its_reference_and_scan_loosely(cluster_size):
  """bf16 operands: equal to the reference that rounds the same way, near float32 scan."""
  args, weights = _inputs(*SHAPES[0])
  kernels = _run(_engine("bfloat16", cluster_size), args, weights)
  _assert_trees_close(kernels, _run(_reference("bfloat16"), args, weights), rtol=1e-4, atol=1e-4)
  outputs, grads = kernels
  expected_outputs, expected_grads = _scan_reference(SHAPES[0])
  _assert_trees_close(outputs, expected_outputs, rtol=0, atol=BF16_ATOL)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(expected_grads))
  _assert_trees_close(grads, expected_grads, rtol=0, atol=BF16_ATOL * scale)


def _through_api(args, engine, **options):
  """`api.lstm` on engine-signature ``args``: their initial state, step mask and dropout masks."""
  params, xs, h0, c0, mask, input_dropout_mask, recurrent_dropout_mask = args
  return api.lstm(
    params,
    xs,
    initial_state=(h0, c0),
    mask=mask,
    input_dropout_mask=input_dropout_mask,
    recurrent_dropout_mask=recurrent_dropout_mask,
    engine=engine,
    **options,
  )


@needs_mosaic
def test_engine_through_the_api():
  """engine="mosaic" with matmul_precision through `api.lstm`, masks and dropout, against scan."""
  args, _ = _inputs(*SHAPES[0], seed=1)
  mosaic = jax.jit(lambda: _through_api(args, "mosaic", matmul_precision="float32"))
  _assert_trees_close(mosaic(), _through_api(args, "scan"))


@needs_mosaic
def test_return_sequences_false_takes_the_final_state_kernel_and_its_gradient():
  """``return_sequences=False`` through `api.lstm`: the final h and state of scan, and scan's gradients;
  without a gradient the call lowers for a GPU to the kernel that stores no per-step planes."""
  args, _ = _inputs(*SHAPES[0], seed=2)
  params, xs = args[:2]

  def run(engine, params, xs):
    return _through_api((params, xs, *args[2:]), engine, return_sequences=False)

  def loss(engine, params, xs):
    outputs, (h, c) = run(engine, params, xs)
    return jnp.sum(outputs * h) + jnp.sum(jnp.sin(c))

  _assert_trees_close(jax.jit(lambda: run("mosaic", params, xs))(), run("scan", params, xs))
  gradient = jax.jit(jax.grad(lambda p, x: loss("mosaic", p, x), argnums=(0, 1)))(params, xs)
  _assert_trees_close(gradient, jax.grad(lambda p, x: loss("scan", p, x), argnums=(0, 1))(params, xs))
  text = lowering.lower(jax.jit(lambda p, x: run("mosaic", p, x)), params, xs, platform="gpu").as_text()
  (call,) = [line for line in text.splitlines() if "stablehlo.custom_call @mosaic_gpu" in line]
  results = call.rsplit("->", 1)[1]  # the final state [2, Bp, Hp] only: no [Bp, T, ...] planes
  assert "tensor<2x64x128xf32>" in results and not re.findall(r"tensor<64x[45]x\d+xf32>", results)


def test_reference_rounds_like_a_three_product_split():
  """The reference's products: X3 within 1e-5 of float32, bf16 within bf16 rounding."""
  a = jax.random.normal(jax.random.key(0), (64, 128))
  b = jax.random.normal(jax.random.key(1), (128, 512))
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  scale = np.abs(exact).max()
  x3 = np.abs(mosaic_gpu._product(a, b, 2) - exact).max() / scale
  bf16 = np.abs(mosaic_gpu._product(a, b, 1) - exact).max() / scale
  assert x3 < 1e-5 < 1e-3 < bf16 < 3e-2


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_approximate_gate_math_stays_within_float32_tolerance_at_500_steps(sign):
  """The reference with exp and rsqrt off by NVIDIA's largest stated error (`APPROX_ERRORS`), all of
  one sign at every step so the errors add up, against float32 scan over the article's 500 steps.

  Elementwise tolerances mean little at T = 500 (gradients reach ~150), so each output and gradient is
  held normwise, largest |error| over largest |value|, to 1e-5: the kernels' exact-math reference is at
  ~2e-6 there (docs/kernels.md) and the worst-case approximations add ~1.5e-6. The test first checks
  that the perturbation moves the results at all, so it cannot pass by doing nothing."""

  def perturbed(function, name):
    return lambda x: function(x) * (1.0 + sign * mosaic_gpu.APPROX_ERRORS[name](x))

  exp, rsqrt = perturbed(jnp.exp, "exp"), perturbed(jax.lax.rsqrt, "rsqrt")
  args, weights = _inputs(16, 500, 32, 100, "random", dropout=True)
  approximate = _run(
    hoisted.make_lstm(mosaic_gpu.make_reference("float32", exp=exp, rsqrt=rsqrt)), args, weights
  )
  exact = _run(_reference("float32"), args, weights)
  assert any(not np.array_equal(a, e) for a, e in zip(jax.tree.leaves(approximate), jax.tree.leaves(exact)))
  for actual, expected in zip(jax.tree.leaves(approximate), jax.tree.leaves(_run(_scan, args, weights))):
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()


def test_kernel_gate_formulas_equal_jax_functions():
  """`sigmoid` and `tanh` as the kernels write them equal jax.nn.sigmoid and jnp.tanh to float32
  rounding, saturating at both ends without NaN."""
  x = jnp.concatenate([jnp.linspace(-30.0, 30.0, 10_001), jnp.array([-200.0, -89.0, 0.0, 89.0, 200.0])])
  # Both sides round; on a GPU XLA's own rsqrt and tanh are a few ulp off too.
  np.testing.assert_allclose(mosaic_gpu.sigmoid(x), jax.nn.sigmoid(x), rtol=0, atol=1e-6)
  np.testing.assert_allclose(mosaic_gpu.tanh(x), jnp.tanh(x), rtol=0, atol=2e-6)


# Every configuration a GPU runs (forward and backward kernels), lowered for CUDA.
GPU_CONFIGURATIONS = [
  (size, precision)
  for size in mosaic_gpu.CLUSTER_SIZES
  for precision in ("float32", "bfloat16")
  if mosaic_gpu.fits(size, precision)
]


def _lower_training_step(lstm, batch=64, steps=3, input_size=32, hidden=100, return_sequences=True):
  """A training step's gradient lowered for a GPU: a loss on every step's output, or (without
  ``return_sequences``) on the final h, as the classifier trains (the backward then loads no dh_t)."""
  args, _ = _inputs(batch, steps, input_size, hidden, "random", dropout=True)

  def loss(params, *rest):
    outputs, _ = lstm(params, *rest, return_sequences=return_sequences)
    return jnp.sum(outputs**2)

  return lowering.lower(jax.jit(jax.grad(loss)), *args, platform="gpu")


@needs_mosaic
@pytest.mark.parametrize("cluster_size, matmul_precision", GPU_CONFIGURATIONS)
def test_lowers_for_cuda(cluster_size, matmul_precision):
  """Forward and backward kernels of each configuration lower (DSMEM exchange) into Mosaic GPU calls,
  with and without the outputs' per-step cotangent."""
  for return_sequences in (True, False):
    lstm = _engine(matmul_precision, cluster_size)
    text = _lower_training_step(lstm, return_sequences=return_sequences).as_text()
    assert text.count("stablehlo.custom_call @mosaic_gpu") == 2
    # The serialised kernels carry their inline PTX: remote stores in both passes (N > 1), and the gate
    # arithmetic as approximate exp2 and rsqrt, never tanh.approx (~2^-11, too coarse for float32).
    assert text.count("st.async") == (2 if cluster_size > 1 else 0)
    assert text.count("ex2.approx.ftz.f32") == 2 and text.count("rsqrt.approx") == 2
    assert "tanh.approx" not in text


@needs_mosaic
@pytest.mark.parametrize("cluster_size, matmul_precision", [(8, "float32"), (1, "bfloat16")])
def test_kernels_without_gradient_lower_for_cuda_and_store_less(cluster_size, matmul_precision):
  """The forward kernels for evaluation lower too, and store per step only h [B, T, Hp] (no gradient) or
  nothing (``return_sequences=False``): their outputs are that, if anything, and the final state."""
  lstm = _engine(matmul_precision, cluster_size)
  args, _ = _inputs(64, 3, 32, 100, "random", dropout=True)
  for return_sequences, stored in ((True, ["64x4x128"]), (False, [])):  # h [Bp, T + 1, Hp]
    function = jax.jit(functools.partial(lstm, return_sequences=return_sequences))
    text = lowering.lower(function, *args, platform="gpu").as_text()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call @mosaic_gpu" in line]
    assert len(calls) == 1
    results = calls[0].rsplit("->", 1)[1]
    assert "tensor<2x64x128xf32>" in results  # the final state
    assert re.findall(r"tensor<(64x\d+x\d+)xf32>", results) == stored


@needs_mosaic
@pytest.mark.parametrize("batch", [64, 70])
def test_no_per_step_array_is_transposed_or_concatenated_around_the_kernels(batch):
  """The lowered training step (forward, backward, hoisted matmuls) moves no [B, T, ...] array through
  a transpose or a concatenation: the kernels read and write the model's own batch-major layouts. T = 7
  marks the per-step arrays; padding a batch that is not whole 64-row blocks is a pad, not a transpose."""
  steps = 7
  text = _lower_training_step(_engine("float32", 8), batch=batch, steps=steps).as_text()
  assert text.count("stablehlo.custom_call @mosaic_gpu") == 2
  moved = [
    line.strip()
    for line in text.splitlines()
    if re.search(r"stablehlo\.(transpose|concatenate)", line)
    and any(
      steps in (int(d) for d in shape.split("x")[:-1])
      for shape in re.findall(r"tensor<([0-9x]+x?\w+)>", line)
    )
  ]
  assert moved == []


def _subjaxprs(eqn):
  """The jaxprs an equation holds (a kernel's body, a loop's body, a cond's branches), in order."""
  found = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (list, tuple)) else [value]:
      inner = getattr(item, "jaxpr", item)
      if hasattr(inner, "eqns"):
        found.append(inner)
  return found


def _primitives(jaxpr):
  """Every primitive's name in ``jaxpr``, nested jaxprs included, in program order."""
  return [name for eqn in jaxpr.eqns for name in (eqn.primitive.name, *_nested(eqn))]


def _nested(eqn):
  return [name for inner in _subjaxprs(eqn) for name in _primitives(inner)]


def _kernel_bodies(jaxpr):
  """The bodies of the Mosaic GPU kernels in ``jaxpr``: the outermost nested jaxprs that issue wgmmas."""
  bodies = []
  for eqn in jaxpr.eqns:
    for inner in _subjaxprs(eqn):
      names = _primitives(inner)
      if "wgmma_ref" in names and not any(e.primitive.name == "wgmma_ref" for e in inner.eqns):
        loops = [e for e in inner.eqns if e.primitive.name in ("scan", "while")]
        bodies.extend(_kernel_bodies(inner) if not loops else [inner])
  return bodies


@needs_mosaic
def test_the_forward_sends_first_one_store_per_target_and_every_kernel_ends_on_a_cluster_barrier():
  """The forward's loop issues the next step's remote stores before it stores its planes to global
  memory, one `async_store_smem` per target carrying hi and lo (N calls, not 2 N); both kernels' last
  act is a cluster barrier, so no CTA exits with a remote store in flight. Read from the traced kernels
  at N = 8 with the exchange through distributed shared memory."""
  args, _ = _inputs(64, 3, 32, 100, "random", dropout=True)
  lstm = _engine("float32", 8, exchange="dsmem", interpret=False)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p, *rest: jnp.sum(lstm(p, *rest)[0])))(*args).jaxpr
  forward, backward = _kernel_bodies(jaxpr)
  for body in (forward, backward):
    assert [eqn.primitive.name for eqn in body.eqns[-2:]] == ["barrier_arrive", "barrier_wait"]
  (loop,) = [eqn for eqn in forward.eqns if eqn.primitive.name in ("scan", "while")]
  (step,) = [inner for inner in _subjaxprs(loop) if "async_store_smem" in _primitives(inner)]
  order = _primitives(step)
  assert order.count("async_store_smem") == 8
  # A plane's store to global memory: ``ref[...] =`` (jax 0.11) or `plgpu.store` (jax >= 0.12).
  first_store = min(order.index(name) for name in ("swap", "store") if name in order)
  assert order.index("async_store_smem") < first_store
  assert "async_store_smem" not in order[first_store:]


@needs_mosaic
def test_automatic_barriers_stay_only_where_a_thread_reads_what_it_wrote(monkeypatch):
  """The kernels lower with ``unsafe_no_auto_barriers`` for the exchanges through shared memory ("local",
  "dsmem"), and keep Pallas's automatic barriers for "gmem" (`mosaic_gpu._needs_auto_barriers`)."""
  seen = []
  kernel = mosaic_gpu.plgpu.kernel

  def recording(*args, compiler_params, **kwargs):
    seen.append(compiler_params.unsafe_no_auto_barriers)
    return kernel(*args, compiler_params=compiler_params, **kwargs)

  monkeypatch.setattr(mosaic_gpu.plgpu, "kernel", recording)
  args, _ = _inputs(5, 2, 4, 7)
  for size, exchange, interpret in ((8, "dsmem", False), (1, None, False), (2, "gmem", True)):
    seen.clear()
    jax.make_jaxpr(_engine("bfloat16", size, exchange=exchange, interpret=interpret))(*args)
    assert seen == [exchange != "gmem"], (size, exchange)


@needs_mosaic
def test_the_gmem_exchange_is_refused_for_a_gpu():
  """Its global loads of other SMs' stores have no acquire or L1-bypassing form in jax's Mosaic GPU."""
  with pytest.raises(ConfigError, match="interpreter only"):
    _lower_training_step(_engine("float32", 8, exchange="gmem"))


def test_configurations_cover_the_cluster_sizes():
  """bfloat16 runs at every cluster size; the three-product split needs N >= 2 on a GPU."""
  assert GPU_CONFIGURATIONS == [
    (1, "bfloat16"),
    (2, "float32"),
    (2, "bfloat16"),
    (4, "float32"),
    (4, "bfloat16"),
    (8, "float32"),
    (8, "bfloat16"),
  ]


@needs_mosaic
def test_a_configuration_over_the_shared_memory_limit_is_refused_for_a_gpu():
  with pytest.raises(ConfigError, match="needs cluster_size >= 2 on a GPU"):
    _lower_training_step(_engine("float32", 1))


def test_bad_options_are_config_errors():
  with pytest.raises(ConfigError, match="matmul_precision"):
    mosaic_gpu.make_lstm("tensorfloat32")
  with pytest.raises(ConfigError, match="cluster_size"):
    mosaic_gpu.make_lstm(cluster_size=16)
  with pytest.raises(ConfigError, match="exchange"):
    mosaic_gpu.make_lstm(exchange="smem")


@pytest.mark.skipif(mosaic_gpu.unavailable_reason() is None, reason="this jax has Pallas Mosaic GPU")
def test_old_jax_is_refused_with_one_line():
  """jax 0.10 (the default stack) lacks the interpreter and parts of Mosaic GPU: a ConfigError says so."""
  assert "needs jax >= 0.11" in mosaic_gpu.unavailable_reason()
  args, _ = _inputs(3, 2, 4, 7)
  with pytest.raises(ConfigError, match="needs jax >= 0.11"):
    mosaic_gpu.lstm(*args)


@needs_mosaic
@pytest.mark.parametrize(
  "capability, usable", [("9.0", True), ("8.0", False), ("10.0", False), ("12.0", False)]
)
def test_only_hopper_runs_the_kernels(monkeypatch, capability, usable):
  """wgmma is sm_90(a) only: a newer GPU gets one line naming Hopper, as an older one does."""

  class Device:
    compute_capability = capability

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "devices", lambda *platform: [Device()])
  monkeypatch.setattr(lowering, "target_platform", lambda: "gpu")
  reason = mosaic_gpu.unavailable_reason()
  if usable:
    assert reason is None
  else:
    assert "needs a Hopper GPU" in reason and f"compute capability {capability}" in reason

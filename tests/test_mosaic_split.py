"""The ``mosaic`` engine's batch-split forward (`mosaic_split`) against ``scan``, and lowered for CUDA.

As tests/test_mosaic_gpu.py: off a GPU the kernels run in the Mosaic GPU interpreter at N = 1 (no
exchange) and N = 2 (the exchange through global memory); the exchange through distributed shared memory
and every configuration a GPU runs are proven by lowering for CUDA on this host. Training runs the
batch-split forward and `mosaic_gpu`'s backward, so the gradients prove both together.
"""

import functools
import re

import jax
import jax.numpy as jnp
import pytest

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_cost, mosaic_gpu, mosaic_split
from tests.test_mosaic_gpu import (  # noqa: F401 (the autouse fixtures apply here too)
  BF16_ATOL,
  SHAPES,
  _assert_trees_close,
  _inputs,
  _kernel_bodies,
  _primitives,
  _reference,
  _run,
  _scan_reference,
  _subjaxprs,
  float32_matmuls,
  interpreted_off_a_gpu,
  needs_mosaic,
)


def _engine(matmul_precision, cluster_size, **options):
  return mosaic_split.make_lstm(matmul_precision, cluster_size=cluster_size, **options)


def _cluster_sizes(matmul_precision):
  if jax.default_backend() != "gpu":
    return [1, 2]
  return [n for n in mosaic_split.CLUSTER_SIZES if mosaic_split.fits(n, matmul_precision)]


# B = 13 (holes, dropout, H = 100: 4 clusters of 16 rows, the last 3 rows padding) and B = 70 (two 64-row
# blocks of the backward, 8 clusters forward): neither a multiple of 16.
SPLIT_SHAPES = [SHAPES[0], SHAPES[3]]


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("float32"))
@pytest.mark.parametrize("shape", SPLIT_SHAPES)
def test_float32_matches_scan(shape, cluster_size):
  """Outputs, final state and every gradient (params, xs, h0, c0) equal float32 scan."""
  args, weights = _inputs(*shape)
  _assert_trees_close(_run(_engine("float32", cluster_size), args, weights), _scan_reference(shape))


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("float32"))
def test_kernels_without_gradient_match_scan(cluster_size):
  """The forward that stores only h and the one that stores only the final state, holes and dropout."""
  shape = SHAPES[0]
  args, _ = _inputs(*shape)
  lstm = _engine("float32", cluster_size)
  outputs, state = _scan_reference(shape, with_gradients=False)
  _assert_trees_close(jax.jit(lstm)(*args), (outputs, state))
  _assert_trees_close(jax.jit(lambda *a: lstm(*a, return_sequences=False))(*args), (state[0], state))


@needs_mosaic
@pytest.mark.parametrize("cluster_size", _cluster_sizes("bfloat16"))
def test_bfloat16_matches_its_reference_and_scan_loosely(cluster_size):
  args, weights = _inputs(*SHAPES[0])
  kernels = _run(_engine("bfloat16", cluster_size), args, weights)
  _assert_trees_close(kernels, _run(_reference("bfloat16"), args, weights), rtol=1e-4, atol=1e-4)
  outputs, grads = kernels
  expected_outputs, expected_grads = _scan_reference(SHAPES[0])
  _assert_trees_close(outputs, expected_outputs, rtol=0, atol=BF16_ATOL)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(expected_grads))
  _assert_trees_close(grads, expected_grads, rtol=0, atol=BF16_ATOL * scale)


GPU_CONFIGURATIONS = [
  (size, precision)
  for size in mosaic_split.CLUSTER_SIZES
  for precision in ("float32", "bfloat16")
  if mosaic_split.fits(size, precision)
]


def _lower(function, batch=64, steps=7):
  args, _ = _inputs(batch, steps, 32, 100, "random", dropout=True)
  return lowering.lower(jax.jit(function), *args, platform="gpu").as_text()


def _training_step(lstm, return_sequences):
  def loss(params, *rest):
    return jnp.sum(lstm(params, *rest, return_sequences=return_sequences)[0] ** 2)

  return jax.grad(loss)


def _calls(text):
  return [line for line in text.splitlines() if "stablehlo.custom_call @mosaic_gpu" in line]


@needs_mosaic
@pytest.mark.parametrize("cluster_size, matmul_precision", GPU_CONFIGURATIONS)
def test_lowers_for_cuda(cluster_size, matmul_precision):
  """Every configuration's training step (batch-split forward, `mosaic_gpu`'s backward) and its
  forwards without a gradient lower into Mosaic GPU calls: remote stores in both passes (N > 1), the
  gate arithmetic as approximate exp2 and rsqrt."""
  lstm = _engine(matmul_precision, cluster_size)
  text = _lower(_training_step(lstm, return_sequences=False))
  assert len(_calls(text)) == 2
  assert text.count("st.async") == (2 if cluster_size > 1 else 0)
  assert text.count("ex2.approx.ftz.f32") == 2 and text.count("rsqrt.approx") == 2
  # The forward's grid: 16-row blocks, 4 clusters for B = 64.
  for return_sequences, stored in ((True, ["64x8x128"]), (False, [])):  # h [Bp, T + 1, Hp]
    (call,) = _calls(_lower(functools.partial(lstm, return_sequences=return_sequences)))
    results = call.rsplit("->", 1)[1]
    assert "tensor<2x64x128xf32>" in results
    assert re.findall(r"tensor<(64x\d+x\d+)xf32>", results) == stored


@needs_mosaic
@pytest.mark.parametrize("batch", [64, 70])
def test_no_per_step_array_is_transposed_or_concatenated_around_the_kernels(batch):
  """The lowered training step moves no [B, T, ...] array (T = 7) through a transpose or a concatenation
  (the mask's broadcast to [Bp, T, Hs] planes is a broadcast)."""
  steps = 7
  text = _lower(_training_step(_engine("float32", 8), return_sequences=True), batch=batch, steps=steps)
  assert len(_calls(text)) == 2
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


@needs_mosaic
def test_the_forward_sends_first_one_store_per_target_and_ends_on_a_cluster_barrier():
  """As `mosaic_gpu`'s forward: the loop issues the next step's remote stores before it stores its planes
  to global memory, one `async_store_smem` per target carrying every bf16 piece (N calls, not 2 N), and
  the kernel's last act is a cluster barrier. Read from the traced kernel at N = 8 through distributed
  shared memory."""
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
  first, last = order.index("async_store_smem"), len(order) - order[::-1].index("async_store_smem")
  stores = [name in ("swap", "store") for name in order]  # ``ref[...] =`` (jax 0.11) or `plgpu.store`
  # Before the send, shared memory only: the accumulator's copy and h's two pieces staged; after it the
  # six planes (h, c, the gates) go to global memory, then the wait.
  assert sum(stores[:first]) == 3
  assert sum(stores[last : order.index("barrier_wait")]) == 6


@needs_mosaic
def test_the_gmem_exchange_is_refused_for_a_gpu():
  """The backward it trains with is `mosaic_gpu`'s, whose "gmem" global loads a GPU could serve stale."""
  with pytest.raises(ConfigError, match="interpreter only"):
    _engine("float32", 8, exchange="gmem", interpret=False)(*_inputs(5, 2, 4, 7)[0])


def test_configurations_fit_as_the_cluster_splits_do():
  """The batch-split forward's shared memory is smaller than the cluster-split's, so the backward decides."""
  assert GPU_CONFIGURATIONS == [
    (size, precision)
    for size in mosaic_gpu.CLUSTER_SIZES
    for precision in ("float32", "bfloat16")
    if mosaic_gpu.fits(size, precision)
  ]


@needs_mosaic
@pytest.mark.parametrize("matmul_precision", ["float32", "bfloat16"])
def test_the_engine_runs_the_layout_the_model_ranks_first(matmul_precision):
  """engine="mosaic" (and so "auto" on a Hopper GPU) lowers to the forward kernel of `mosaic_cost.best`'s
  layout at the default cluster size, told apart by its operands' types (the batch-split forward takes
  the step mask as [Bp, T, Hs] planes and U^T in K slices)."""
  layout, cluster_size = mosaic_cost.best(matmul_precision)
  assert cluster_size == mosaic_gpu.DEFAULT_CLUSTER_SIZE

  def signature(function):
    (call,) = _calls(_lower(function, steps=3))
    return call.rsplit(" : ", 1)[1]

  signatures = {
    name: signature(module.make_lstm(matmul_precision, cluster_size=cluster_size))
    for name, module in mosaic_cost.LAYOUTS.items()
  }
  assert len(set(signatures.values())) == len(signatures)
  assert (
    signature(functools.partial(mosaic_gpu.lstm, matmul_precision=matmul_precision)) == signatures[layout]
  )


def test_bad_options_are_config_errors():
  with pytest.raises(ConfigError, match="matmul_precision"):
    mosaic_split.make_lstm("tensorfloat32")
  with pytest.raises(ConfigError, match="cluster_size"):
    mosaic_split.make_lstm(cluster_size=16)
  with pytest.raises(ConfigError, match="exchange"):
    mosaic_split.make_lstm(exchange="smem")

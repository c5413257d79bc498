"""``engine="auto"`` on a GPU is safe before it is fast: its kernel engines prove themselves first.

The GPU kernels (``mosaic``, ``pallas``) are proven on CPU in interpreters and by lowering, but a
compiler or driver on a real device may still get them wrong. So the first time in a process that `auto`
picks one for a shape class (hidden size) and precision, it runs a tiny forward and backward pass of it
next to ``fused`` (plain XLA, the reference engine) and compares. An engine that errs or differs gives
way to the next of `GPU_ORDER`; ``fused`` is the last resort. One line on stderr says which engine runs
and, if any fell back, why. Results are cached for the process.

A user of `auto` never gets a silently wrong LSTM: at worst a slower one, and a line saying so.
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

# Fallback order on a GPU (``mosaic`` needs compute capability >= 9.0: its unavailable_reason).
GPU_ORDER = ("mosaic", "pallas", "fused")
REFERENCE = "fused"
# The check's problem: a padded batch, a hole in the mask, dropout masks; small enough to run in ~1 s.
CHECK_BATCH, CHECK_STEPS, CHECK_INPUT = 5, 3, 4
# Largest |engine - fused| allowed, relative to the largest |fused| value of each output/gradient:
# float32-level engines as the engine tests, bf16 operands at their rounding.
TOLERANCE = {"float32": 1e-4, "BF16_BF16_F32_X3": 1e-4, "BF16_BF16_F32_X6": 1e-4, "tensorfloat32": 1e-2}
BF16_TOLERANCE = 5e-2


def _problem(hidden: int):
  """The check's arguments for `api.lstm` as numpy arrays (fixed seed)."""
  from seqclf.lstm import api

  rng = np.random.default_rng(0)
  # Concrete even while an outer jit traces (where `auto` is usually resolved).
  with jax.ensure_compile_time_eval():
    params = jax.tree.map(np.asarray, api.init_params(jax.random.key(0), CHECK_INPUT, hidden))
  mask = np.ones((CHECK_BATCH, CHECK_STEPS), bool)
  mask[1, 1] = False
  return dict(
    params=params,
    xs=rng.normal(size=(CHECK_BATCH, CHECK_STEPS, CHECK_INPUT)).astype(np.float32),
    mask=mask,
    input_dropout_mask=((rng.random((CHECK_BATCH, CHECK_INPUT)) < 0.7) / 0.7).astype(np.float32),
    recurrent_dropout_mask=((rng.random((CHECK_BATCH, hidden)) < 0.7) / 0.7).astype(np.float32),
  )


def _outputs_and_gradients(engine: str, matmul_precision: str, problem):
  """Outputs, final state and parameter/input gradients of ``engine`` on ``problem``, compiled and run.

  Runs an AOT-compiled executable on concrete arrays, so it also works while an outer jit is tracing.
  """
  from seqclf.lstm import api

  def loss(params, xs):
    outputs, (h, c) = api.lstm(
      params,
      xs,
      mask=problem["mask"],
      input_dropout_mask=problem["input_dropout_mask"],
      recurrent_dropout_mask=problem["recurrent_dropout_mask"],
      engine=engine,
      matmul_precision=matmul_precision,
    )
    return jnp.sum(outputs * outputs) + jnp.sum(h) + jnp.sum(c), (outputs, h, c)

  args = (problem["params"], problem["xs"])
  # The reference's XLA matmuls must be float32 products too (XLA on a GPU would use TF32).
  with jax.default_matmul_precision("float32"):
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)).lower(*args).compile()
  (_, outputs), grads = compiled(*args)
  return jax.tree.map(np.asarray, (outputs, grads))


def _precision_for(engine: str, matmul_precision: str) -> str:
  """The precision ``engine`` runs the request at (``fused`` computes float32 whatever was asked)."""
  from seqclf.lstm import api

  return matmul_precision if matmul_precision in api.ENGINES[engine].matmul_precisions else "float32"


def _mismatch(engine: str, matmul_precision: str, hidden: int) -> str | None:
  """Why ``engine`` fails the check against the reference, or None if it passes."""
  problem = _problem(hidden)
  try:
    actual = _outputs_and_gradients(engine, matmul_precision, problem)
  except Exception as error:  # any failure of the engine is a reason to fall back, not to crash
    return f"it raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
  expected = _outputs_and_gradients(REFERENCE, "float32", problem)
  tolerance = TOLERANCE.get(matmul_precision, BF16_TOLERANCE)
  worst = 0.0
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    error = float(np.max(np.abs(a - e))) / max(float(np.max(np.abs(e))), 1e-30)
    worst = max(worst, error if np.isfinite(error) else np.inf)
  if worst > tolerance:
    return f"its outputs or gradients differ from {REFERENCE}'s by {worst:.2g} (relative) > {tolerance:g}"
  return None


@functools.cache
def verified_engine(candidates: tuple[str, ...], hidden: int, matmul_precision: str) -> str:
  """The first of ``candidates`` that passes the check (else `REFERENCE`); prints one line saying so."""
  reasons, chosen = [], REFERENCE
  for engine in candidates:
    if engine == REFERENCE:
      break
    reason = _mismatch(engine, _precision_for(engine, matmul_precision), hidden)
    if reason is None:
      chosen = engine
      break
    reasons.append(f"{engine}: {reason}")
  if not reasons and chosen != REFERENCE:
    why = f"matches {REFERENCE} on a [{CHECK_BATCH}, {CHECK_STEPS}, {CHECK_INPUT}] -> {hidden} check"
  elif reasons:
    why = "fell back: " + "; ".join(reasons)
  else:
    why = "the reference engine"
  if chosen == REFERENCE and matmul_precision != "float32":
    why += f"; {REFERENCE} computes float32, not {matmul_precision}"
  print(f"seqclf: LSTM engine auto -> {chosen} (hidden={hidden}, {matmul_precision}; {why})", file=sys.stderr)
  return chosen


def checked(chosen: str, *, platform: str, hidden: int, matmul_precision: str) -> str:
  """What `auto` runs, given the engine it chose: on a GPU the first of it and the later engines of
  `GPU_ORDER` that pass the check. Elsewhere, or when lowering for a GPU this host lacks (no device to
  check on), ``chosen`` itself."""
  if platform != "gpu" or jax.default_backend() != "gpu" or chosen not in GPU_ORDER:
    return chosen
  from seqclf.lstm import api

  later = GPU_ORDER[GPU_ORDER.index(chosen) :]
  candidates = tuple(
    engine for engine in later if engine == REFERENCE or api.unavailable_reason(engine) is None
  )
  return verified_engine(candidates, hidden, matmul_precision)

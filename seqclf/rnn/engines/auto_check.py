"""``engine="auto"`` on a GPU is safe before it is fast: its kernel engines prove themselves first.

The GPU kernels (``mosaic``, ``pallas``) are proven on CPU in interpreters and by lowering, but a
compiler or driver on a real device may still get them wrong, hang (a barrier waiting forever) or fault
(an illegal address, which poisons the CUDA context of the process it happens in). So the first time in
a process that `auto` picks one for a shape class (hidden size) and precision, a *child process* runs a
tiny forward and backward pass of it next to ``fused`` (plain XLA, the reference engine) and compares,
under a timeout. An engine that errs, differs, hangs or kills its process gives way to the next
candidate; ``fused`` is the last resort. One line on stderr says which engine runs and, if any fell
back, why. Results are cached for the process.

A user of `auto` never gets a silently wrong LSTM, nor a hung or crashed one: at worst a slower one, and
a line saying so.

The candidates (their order is `seqclf.rnn.engines.AUTO`'s) come from the caller, so this module imports
nothing of the api; the child (`child`: MODULE HIDDEN PRECISION) imports the engine's module itself.
"""

import functools
import importlib
import json
import os
import signal
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

REFERENCE = "fused"
REFERENCE_MODULE = "seqclf.rnn.engines.fused"
# The check's problem: a padded batch, a hole in the mask, dropout masks; small enough to run in ~1 s.
CHECK_BATCH, CHECK_STEPS, CHECK_INPUT = 5, 3, 4
# Largest |engine - fused| allowed, relative to the largest |fused| value of each output/gradient:
# float32-level engines as the engine tests, bf16 operands at their rounding.
TOLERANCE = {"float32": 1e-4, "BF16_BF16_F32_X3": 1e-4, "BF16_BF16_F32_X6": 1e-4, "tensorfloat32": 1e-2}
BF16_TOLERANCE = 5e-2
# A child's whole life: starting Python and JAX on the GPU, compiling the engine's kernels and fused's
# (tens of seconds for a Mosaic GPU kernel), running both. Past it the engine is taken to hang.
TIMEOUT_S = 180


class Candidate(NamedTuple):
  """An engine `auto` may run: its name, its module (holding an engine-signature ``lstm``), the
  ``matmul_precision`` keyword to call it with (None: its ``lstm`` takes none; it computes float32) and
  whether its ``lstm`` takes ``return_sequences`` (its entry's ``final_state``: the check then runs the
  final-h path too, which a classifier trains and evaluates with)."""

  name: str
  module: str
  matmul_precision: str | None
  final_state: bool = False


def _problem(hidden: int):
  """The check's engine-signature arguments as numpy arrays (fixed seed)."""
  rng = np.random.default_rng(0)
  # The parameter layout of `seqclf.rnn.engines.scan`, at the scale of Keras' initialisation, forget bias 1.
  bias = np.zeros(4 * hidden, np.float32)
  bias[hidden : 2 * hidden] = 1.0
  params = {
    "kernel": (rng.normal(size=(CHECK_INPUT, 4 * hidden)) / np.sqrt(CHECK_INPUT)).astype(np.float32),
    "recurrent_kernel": (rng.normal(size=(hidden, 4 * hidden)) / np.sqrt(hidden)).astype(np.float32),
    "bias": bias,
  }
  mask = np.ones((CHECK_BATCH, CHECK_STEPS), bool)
  mask[1, 1] = False
  zeros = np.zeros((CHECK_BATCH, hidden), np.float32)
  return (
    params,
    rng.normal(size=(CHECK_BATCH, CHECK_STEPS, CHECK_INPUT)).astype(np.float32),
    zeros,
    zeros,
    mask,
    ((rng.random((CHECK_BATCH, CHECK_INPUT)) < 0.7) / 0.7).astype(np.float32),
    ((rng.random((CHECK_BATCH, hidden)) < 0.7) / 0.7).astype(np.float32),
  )


def _outputs_and_gradients(module: str, matmul_precision: str | None, problem, return_sequences: bool = True):
  """Outputs, final state and parameter/input gradients of the engine in ``module`` on ``problem``."""
  run = importlib.import_module(module).lstm
  options = {} if matmul_precision is None else {"matmul_precision": matmul_precision}
  if not return_sequences:
    options["return_sequences"] = False
  params, xs, *rest = problem

  def loss(params, xs):
    outputs, (h, c) = run(params, xs, *rest, **options)
    return jnp.sum(outputs * outputs) + jnp.sum(h) + jnp.sum(c), (outputs, h, c)

  # The reference's XLA matmuls must be float32 products too (XLA on a GPU would use TF32).
  with jax.default_matmul_precision("float32"):
    (_, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, xs)
  return jax.tree.map(np.asarray, (outputs, grads))


def mismatch(module: str, matmul_precision: str | None, hidden: int, final_state: bool = False) -> str | None:
  """Why the engine in ``module`` fails the check against `REFERENCE`, or None if it passes (in this
  process: the child's job). With ``final_state`` the ``return_sequences=False`` path is checked too."""
  problem = _problem(hidden)
  paths = (True, False) if final_state else (True,)
  try:
    actual = [_outputs_and_gradients(module, matmul_precision, problem, path) for path in paths]
  except Exception as error:  # any failure of the engine is a reason to fall back, not to crash
    return f"it raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
  expected = [_outputs_and_gradients(REFERENCE_MODULE, None, problem, path) for path in paths]
  tolerance = TOLERANCE.get(matmul_precision or "float32", BF16_TOLERANCE)
  worst = 0.0
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    error = float(np.max(np.abs(a - e))) / max(float(np.max(np.abs(e))), 1e-30)
    worst = max(worst, error if np.isfinite(error) else np.inf)
  if worst > tolerance:
    return f"its outputs or gradients differ from {REFERENCE}'s by {worst:.2g} (relative) > {tolerance:g}"
  return None


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:
    return f"signal {number}"


def isolated_mismatch(candidate: Candidate, hidden: int) -> str | None:
  """`mismatch` run in a child process under `TIMEOUT_S`: a hang or a fault is a reason too."""
  command = [
    sys.executable,
    "-c",
    f"import sys; from {__package__} import auto_check; auto_check.child(*sys.argv[1:])",
    candidate.module,
    str(hidden),
    candidate.matmul_precision or "",
    "1" if candidate.final_state else "",
  ]
  # The parent may already hold most of the GPU's memory (JAX preallocates): the child takes what it uses.
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  try:
    child = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
  except subprocess.TimeoutExpired:
    return f"its check did not finish within {TIMEOUT_S} s (a hang?)"
  if child.returncode < 0:
    return f"its check process died of {_signal_name(-child.returncode)}"
  lines = child.stdout.strip().splitlines()
  if child.returncode != 0 or not lines:
    last = (child.stderr.strip().splitlines() or ["no output"])[-1]
    return f"its check process failed (exit {child.returncode}: {last[:200]})"
  return json.loads(lines[-1])["mismatch"]


@functools.cache
def verified_engine(candidates: tuple[Candidate, ...], hidden: int, matmul_precision: str) -> str:
  """The first of ``candidates`` that passes the check (else `REFERENCE`); prints one line saying so."""
  reasons, chosen = [], REFERENCE
  for candidate in candidates:
    if candidate.name == REFERENCE:
      break
    reason = isolated_mismatch(candidate, hidden)
    if reason is None:
      chosen = candidate.name
      break
    reasons.append(f"{candidate.name}: {reason}")
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


def child(module: str, hidden: str, matmul_precision: str, final_state: str = "") -> None:
  """The child process's side: one JSON line, ``{"mismatch": reason or null}``, on stdout."""
  reason = mismatch(module, matmul_precision or None, int(hidden), final_state == "1")
  print(json.dumps({"mismatch": reason}), flush=True)

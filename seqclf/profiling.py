"""Profiler traces of steady-state steps: ``--profile_dir=DIR`` and ``--profile_steps=N`` for every driver.

  python -m seqclf.main --workdir=runs/r --profile_dir=runs/r/profile --profile_steps=5
  tensorboard --logdir=runs/r/profile          # Profile tab (pip install tensorboard-plugin-profile)
  # or open DIR/plugins/profile/<date>/perfetto_trace.json.gz at https://ui.perfetto.dev

A trace holds N steps after compilation and warm-up: the drivers compile ahead of time, before the first
step, and `StepTrace` starts only after ``WARMUP_STEPS`` steps have run and finished, so neither the
compiler nor first-call costs (buffer allocation, the allocator's first page faults, caches) are in it.
Each traced step is marked with `jax.profiler.StepTraceAnnotation`, which the profile plugin's step-time
view reads. Tracing slows the traced steps down, so the epoch (or benchmark point) it lands in is not a
measurement; the benchmark timing loops trace extra calls apart from their timed repeats.

The flags are defined by `define_flags`, which the drivers that train or time call (like ``--preset``);
the library (`seqclf.train.fit`, `seqclf.timing.steady_state`) takes a `StepTrace`, never the flags.
"""

import contextlib
import os
import tempfile

import jax
from absl import flags

# Steps that run (and finish) before the trace starts: the first calls of a compiled step still pay
# one-time costs that are not the steady state.
WARMUP_STEPS = 2

# The flags, once a driver called `define_flags`.
PROFILE_DIR: flags.FlagHolder | None = None
PROFILE_STEPS: flags.FlagHolder | None = None


def define_flags() -> None:
  """Defines ``--profile_dir`` and ``--profile_steps`` for a driver; defined once per process."""
  global PROFILE_DIR, PROFILE_STEPS
  if PROFILE_DIR is not None:
    return
  PROFILE_DIR = flags.DEFINE_string(
    "profile_dir",
    None,
    "Write a jax.profiler trace of --profile_steps steady-state steps here (TensorBoard's profile plugin: "
    "tensorboard --logdir=DIR; Perfetto: DIR/plugins/profile/*/perfetto_trace.json.gz).",
  )
  PROFILE_STEPS = flags.DEFINE_integer(
    "profile_steps", 5, "Steps (or timed calls) in the --profile_dir trace.", lower_bound=1
  )
  # Checked while the command line is parsed: the trace starts only after training has.
  flags.register_validator("profile_dir", _check_writable_directory)


def _check_writable_directory(path: str | None) -> bool:
  """Whether a trace can be written into ``path`` (created when it is missing), without leaving
  anything behind; raises `flags.ValidationError` naming the problem."""
  if not path:
    return True
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise flags.ValidationError(f"{existing} is a file, not a directory; pass a writable directory")
  try:
    os.rmdir(tempfile.mkdtemp(dir=existing))
  except OSError as error:
    raise flags.ValidationError(
      f"cannot write in {existing} ({error.strerror or error}); pass a writable directory"
    ) from error
  return True


class StepTrace:
  """Traces ``steps`` steps of a loop after ``warmup`` steps, into ``directory``.

  The loop calls `step` around each dispatch and `advance` after it; `close` (or leaving the ``with``
  block) stops a trace the loop ended early. One `StepTrace` traces once.
  """

  def __init__(self, directory: str, steps: int, warmup: int = WARMUP_STEPS):
    self.directory, self.steps, self.warmup = directory, steps, warmup
    self.tracing, self.done, self._started_at = False, False, 0

  def step(self, step_number: int):
    """A context for dispatching step ``step_number``: its annotation while tracing."""
    if not self.tracing:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step_number)

  def advance(self, steps_done: int, outputs) -> None:
    """Starts or stops the trace; ``steps_done`` counts the steps dispatched so far, ``outputs`` the
    latest step's results (blocked on first, so the trace holds exactly the steps dispatched in it)."""
    if self.done:
      return
    if not self.tracing and steps_done >= self.warmup:
      jax.block_until_ready(outputs)
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.tracing, self._started_at = True, steps_done
    elif self.tracing and steps_done >= self._started_at + self.steps:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.tracing:
      jax.profiler.stop_trace()
      self.tracing, self.done = False, True

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def from_flags(name: str = "") -> StepTrace | None:
  """The trace the command line asks for, into ``--profile_dir[/name]``; None without ``--profile_dir``.

  Drivers that trace several runs or measurements give each its own ``name`` (a subdirectory, which
  TensorBoard lists as a run).
  """
  if PROFILE_DIR is None or not flags.FLAGS.is_parsed() or not PROFILE_DIR.value:  # library, or no flag
    return None
  return StepTrace(os.path.join(PROFILE_DIR.value, name) if name else PROFILE_DIR.value, PROFILE_STEPS.value)

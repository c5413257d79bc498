"""Timing rules for every benchmark: compile apart, warm-up excluded, block before the clock, spread."""

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:  # not at run time: importing seqclf.profiling defines its command-line flags
  from seqclf.profiling import StepTrace


def compile_seconds(jitted, *args) -> tuple[Callable, float]:
  """AOT-compiles ``jitted`` for ``args``; returns the compiled callable and the seconds it took."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def steady_state(
  fn: Callable, *args, warmup: int = 1, repeats: int = 5, number: int = 1, trace: "StepTrace | None" = None
) -> dict:
  """Seconds per call of ``fn(*args)`` after ``warmup`` calls: median, min, max over ``repeats``.

  Each repeat times ``number`` back-to-back calls and blocks on the last result before reading the clock.
  With ``trace`` (a `seqclf.profiling.StepTrace`), calls made for the profiler run after the warm-up and
  before the timed repeats, apart from them: tracing slows the calls it records.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be at least 1, got {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  if trace is not None:
    with trace:
      calls = 0
      while not trace.done:
        with trace.step(calls):
          out = fn(*args)
        calls += 1
        trace.advance(calls, out)
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(number):
      out = fn(*args)
    jax.block_until_ready(out)
    samples.append((time.perf_counter() - start) / number)
  return {
    "median_s": statistics.median(samples),
    "min_s": min(samples),
    "max_s": max(samples),
    "repeats": repeats,
  }

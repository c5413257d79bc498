"""Timing rules for every benchmark: compile apart, warm-up excluded, block before the clock, spread."""

import statistics
import time
from collections.abc import Callable

import jax


def compile_seconds(jitted, *args) -> tuple[Callable, float]:
  """AOT-compiles ``jitted`` for ``args``; returns the compiled callable and the seconds it took."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


def steady_state(fn: Callable, *args, warmup: int = 1, repeats: int = 5, number: int = 1) -> dict:
  """Seconds per call of ``fn(*args)`` after ``warmup`` calls: median, min, max over ``repeats``.

  Each repeat times ``number`` back-to-back calls and blocks on the last result before reading the clock.
  """
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
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

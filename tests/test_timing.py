"""`seqclf.timing`: compile time apart, warm-up excluded, every repeat blocked on before the clock."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import timing


def test_compile_seconds_returns_the_compiled_function_and_its_time():
  x = jnp.arange(4.0)
  compiled, seconds = timing.compile_seconds(jax.jit(lambda x: x * 2), x)
  np.testing.assert_array_equal(compiled(x), [0.0, 2.0, 4.0, 6.0])
  assert seconds > 0


def test_steady_state_runs_warm_up_then_repeats_of_number_calls():
  calls = []

  def fn(x):
    calls.append(x)
    return jnp.asarray(x)

  stats = timing.steady_state(fn, 1.0, warmup=2, repeats=3, number=4)
  assert len(calls) == 2 + 3 * 4
  assert set(stats) == {"median_s", "min_s", "max_s", "repeats"} and stats["repeats"] == 3
  assert 0 < stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def test_each_repeat_waits_for_the_device():
  blocked = []

  class Result:
    def block_until_ready(self):
      blocked.append(True)
      return self

  timing.steady_state(lambda: Result(), warmup=1, repeats=2)
  assert len(blocked) == 1 + 2  # the warm-up call and the last call of each repeat


def test_no_repeats_is_refused():
  with pytest.raises(ValueError, match="repeats"):
    timing.steady_state(lambda: None, repeats=0)

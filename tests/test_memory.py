"""`seqclf.memory`: a compiled step too large for the device is refused before anything is allocated."""

import jax
import jax.numpy as jnp
import pytest

from seqclf import memory


def test_a_step_that_cannot_fit_is_refused_before_training():
  compiled = jax.jit(lambda x: x * 2).lower(jnp.ones((64, 64))).compile()
  memory.check_fits_in_memory([compiled])  # a small step fits

  class Huge:
    def memory_analysis(self):
      analysis = compiled.memory_analysis()
      analysis.temp_size_in_bytes = 2**50
      return analysis

  with pytest.raises(memory.ResourceError, match=r"needs 1048576\.0 GiB but cpu has .*batch_size"):
    memory.check_fits_in_memory([compiled, Huge()])  # the largest step counts

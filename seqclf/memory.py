"""Refusing, before training, a compiled step that cannot fit in the device's memory."""

import os

import jax

from seqclf.errors import ResourceError

TRAINING_FIX = "lower --config.batch_size or --config.maxlen (or use --bucketing)"


def check_fits_in_memory(compiled_steps, fix: str = TRAINING_FIX) -> None:
  """Raises `ResourceError` before training if the largest compiled step cannot fit on the device.

  ``fix`` ends the message: what to change on the command line that made the step.

  Uses XLA's own memory analysis of the compiled step (arguments, outputs and temporaries), so the
  estimate is exact for the step and is known before the big buffers are allocated.
  """
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit")
  if limit is None and device.platform == "cpu":
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
  if not limit:
    return
  needed = 0
  for compiled in compiled_steps:
    analysis = compiled.memory_analysis()
    if analysis is None:
      return
    needed = max(
      needed, analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    )
  if needed > limit:
    raise ResourceError(
      f"one step needs {needed / 2**30:.1f} GiB but {device.platform} has {limit / 2**30:.1f} GiB "
      f"available; {fix}"
    )

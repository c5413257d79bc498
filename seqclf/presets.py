"""Named platform presets: XLA flags and environment applied by name (``--preset``), never by hand.

A preset must be applied before JAX creates its backends (the drivers do it first thing in ``main``),
because XLA reads ``XLA_FLAGS`` once, at backend start-up.

  none            nothing changed.
  gpu_graphs      CUDA graphs (command buffers) also for while loops and conditionals, so a `lax.scan`
                  time loop is replayed as one graph instead of being launched kernel by kernel from
                  the host. Not yet measured on a GPU (no session has had one): opt-in.

Tried and left out: one XLA CPU device per core (``--xla_force_host_platform_device_count=2``) so the
data-parallel mesh splits each batch over both cores. On the 2-core CPU here the article LSTM epoch took
134.6 s against 97.8 s with one device (same engine, same day): XLA's CPU devices do not run their halves
side by side fast enough to pay for the split.
"""

import os

from seqclf.errors import ConfigError

PRESETS = {
    "none": {},
    "gpu_graphs": {"xla_flags": [
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"]},
}


def apply(name: str, environ=os.environ) -> list[str]:
  """Adds preset ``name``'s flags to ``XLA_FLAGS`` in ``environ``; returns the flags it added."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
  added = list(PRESETS[name].get("xla_flags", []))
  if added:
    environ["XLA_FLAGS"] = " ".join([environ.get("XLA_FLAGS", ""), *added]).strip()
  return added

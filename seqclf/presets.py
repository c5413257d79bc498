"""Named platform presets: XLA flags and process settings applied by name (``--preset``), never by hand.

A preset must be applied before JAX creates its backends (the drivers do it first thing in ``main``):
XLA reads ``XLA_FLAGS`` once, at backend start-up, and the heap settings only reach threads that have not
allocated yet, and XLA starts its worker threads with the backend.

  auto            ``cpu_heap`` unless an accelerator plugin (CUDA, TPU) is installed and
                  ``JAX_PLATFORMS`` does not pin the CPU; then ``none``. The drivers' default.
  none            nothing changed.
  cpu_heap        glibc malloc keeps freed memory mapped (one arena, no mmap, no trimming). XLA's CPU
                  runtime allocates each execution's temporaries as one block (134 MiB for the article
                  LSTM's train step) with ``posix_memalign`` from a worker thread; glibc serves such a
                  block with a fresh ``mmap`` and unmaps it on free, so every step page-faults its whole
                  scratch space in again: 34,000 minor faults and ~75 ms of kernel time per step
                  (B=64, T=500, H=100, 2-core EPYC). With the preset: 0 faults, and an LSTM fwd+bwd of
                  118.6 instead of 169.9 ms (cpu_kernel engine; fused: 189.6 instead of 261.1 ms). The
                  cost: the process keeps its peak heap instead of returning it to the system, and
                  that peak can be a few temporaries' worth above need (glibc cannot always reuse a
                  freed block for the next aligned request of the same size; growth stops at a
                  plateau: at most 8 blocks of 32 MiB within 60 calls in tests/test_presets.py). It
                  applies to the whole process, peers included, so side-by-side runs stay like for like.
                  A no-op where the C library is not glibc.
  gpu_graphs      CUDA graphs (command buffers) also for while loops and conditionals, so a `lax.scan`
                  time loop is replayed as one graph instead of being launched kernel by kernel from
                  the host. Not yet measured on a GPU: opt-in.

Tried and left out: one XLA CPU device per core (``--xla_force_host_platform_device_count=2``) so the
data-parallel mesh splits each batch over both cores. On the 2-core CPU here the article LSTM epoch took
134.6 s against 97.8 s with one device (same engine, same day): XLA's CPU devices do not run their halves
side by side fast enough to pay for the split. (The ``cpu_kernel`` engine splits the batch over the cores
inside its own kernel instead.) Environment variables (``MALLOC_MMAP_MAX_=0`` and friends) do not
replace ``cpu_heap``: glibc still maps large blocks of a thread's own arena with ``mmap``; only a single
arena (``M_ARENA_MAX=1``) routes them to the main heap, where the other settings hold.
"""

import ctypes
import importlib.util
import os

from absl import flags

from seqclf.errors import ConfigError

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_HEAP_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "libtpu")

PRESETS = {
  "auto": {},
  "none": {},
  "cpu_heap": {"heap": True},
  "gpu_graphs": {
    "xla_flags": [
      "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"
    ]
  },
}


# The --preset flag, once a driver called `define_flags` (one flag however many drivers share a process).
PRESET: flags.FlagHolder | None = None


def define_flags() -> None:
  """Defines ``--preset`` (``PRESET``) for a driver; defined once per process."""
  global PRESET
  if PRESET is None:
    PRESET = flags.DEFINE_enum(
      "preset",
      "auto",
      list(PRESETS),
      "Platform preset (seqclf/presets.py); apply it first thing in main, before JAX starts its backends.",
    )


def resolve(name: str, environ=os.environ) -> str:
  """The concrete preset ``name`` stands for ("auto" becomes "cpu_heap" or "none")."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
  if name != "auto":
    return name
  cpu_pinned = environ.get("JAX_PLATFORMS", "").split(",")[0].strip() == "cpu"
  has_accelerator = any(importlib.util.find_spec(plugin) is not None for plugin in _ACCELERATOR_PLUGINS)
  return "cpu_heap" if cpu_pinned or not has_accelerator else "none"


def _keep_heap_mapped() -> bool:
  """Applies the ``cpu_heap`` mallopt settings; False where there is no glibc ``mallopt``."""
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(parameter, value) == 1 for parameter, value in _HEAP_SETTINGS)


def apply(name: str, environ=os.environ) -> str:
  """Applies preset ``name`` (XLA flags into ``environ``, heap settings to this process).

  Returns the concrete preset applied, for the results' metadata.
  """
  name = resolve(name, environ)
  preset = PRESETS[name]
  added = list(preset.get("xla_flags", []))
  if added:
    environ["XLA_FLAGS"] = " ".join([environ.get("XLA_FLAGS", ""), *added]).strip()
  if preset.get("heap") and not _keep_heap_mapped():
    return "none"
  return name

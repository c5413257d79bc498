"""The ``cpu_kernel`` engine: a whole LSTM or GRU layer as multithreaded C++ kernels, called through XLA's FFI.

On CPU, XLA runs each `lax.scan` step of ``scan`` or ``fused`` as a handful of single-threaded kernels, so
at the article's shapes the loop is bound by per-step overhead and by one core. The C++ kernel runs the
whole forward loop, and the whole backward loop, as one call each: a step is one register-blocked matmul of
[x_t, h_{t-1}] against the stacked weights [W; U] plus one vectorised pass of gate arithmetic, and the
batch rows, which never interact, are split over ``num_threads`` threads that each run the full time loop
without synchronising. The backward call returns every gradient (dx, dh0, dc0, d[W; U] accumulated per
thread, db), so XLA has nothing of the layer left to do. Inputs and outputs stay batch-major: no
transposes.

The library is compiled at first use with the machine's C++ compiler (``$CXX``, default ``g++``; C++17)
for the CPU it runs on (``-march=native``), and cached under ``$SEQCLF_CACHE_DIR`` (default
``~/.cache/seqclf``) keyed by the source, the flags, jaxlib's version and the CPU's model and features, so
a shared home directory never hands a library to a CPU it was not built for; a build (seconds) is logged
at info level, naming the library. Without a compiler the engine raises a `ConfigError` that names the
fix, and ``engine="auto"`` falls back to ``fused``.

float32 in and out; the exponential is a Cephes-style polynomial (relative error ~1e-7), so results match
``scan`` to ~1e-6 rather than bit for bit (tests/test_engines.py). ``matmul_precision="bfloat16"``
(opt-in, on CPUs with AVX512-BF16) rounds the operands of each step's three products, [x_t, h_{t-1}] @
[W; U] forward, dz_t @ [W; U]^T and the weight gradient [x_t, h_{t-1}]^T @ dz_t backward, to bfloat16 and
sums them in float32; the state, the gate arithmetic and the sums over steps stay float32. The products run on AMX tiles where
the CPU has them and Linux grants the process their state, else with vdpbf16ps, which pays only where
it runs at an FMA's rate (docs/kernels.md has the figures). Masked steps cost nothing: each
step's products run on the rows whose step is not masked. Threads: ``$SEQCLF_LSTM_THREADS``, else the
cores this process may run on; each thread gets a contiguous block of whole matmul row blocks (8 rows with
AVX-512, else 4).

The GRU (`gru`): the same library around the GRU cell: one call runs the whole forward loop, one the whole backward loop, the batch rows
split over threads that each run the full time loop, masked (row, step) pairs skipped at no FLOPs. A step
is three register-blocked float32 products (x @ [W_z W_r W_n], h @ [U_z U_r], h @ U_n; r scales only the
last, so it stays apart) and one vectorised pass of gate arithmetic; the backward call returns every
gradient in the parameters' own layout. Results match ``scan`` to ~1e-6 (the exponential is a polynomial).

``matmul_precision="bfloat16"`` (opt-in, CPUs with AVX512-BF16; AMX tiles where granted) rounds the
operands of the step's products to bfloat16, as the LSTM's: x @ W and h @ U forward, dz @ W^T and dz @ U^T
backward, summed in float32. The weight gradient stays a float32 product (it runs once per block of steps,
not in the recurrence), as do the state and the gate arithmetic. Threads as for the LSTM
(``$SEQCLF_LSTM_THREADS``, else the cores this process may run on).
"""

import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from seqclf import dirs
from seqclf.errors import ConfigError
from seqclf.rnn.engines import hoisted

_logger = logging.getLogger(__name__)

# The kernel's C++ source: one translation unit (MAIN) including the folder's other files.
SOURCES = pathlib.Path(__file__).with_name("cpu_kernel_src")
MAIN = SOURCES / "cpu_kernel.cc"
# -fno-trapping-math lets g++ vectorise the floor and float->int conversion inside the exponential;
# nothing here relies on floating-point traps, and unlike -ffast-math it keeps IEEE semantics.
CXXFLAGS = (
  "-O3",
  "-march=native",
  "-fno-trapping-math",
  "-fno-math-errno",
  "-std=c++17",
  "-shared",
  "-fPIC",
  "-pthread",
)
# Exported handler symbol -> the name XLA knows it by.
_TARGETS = {
  "SeqclfLstmForward": "seqclf_lstm_forward",
  "SeqclfLstmInference": "seqclf_lstm_inference",
  "SeqclfLstmBackward": "seqclf_lstm_backward",
  "SeqclfGruForward": "seqclf_gru_forward",
  "SeqclfGruInference": "seqclf_gru_inference",
  "SeqclfGruBackward": "seqclf_gru_backward",
}


def default_num_threads() -> int:
  """The cores this process may run on (``$SEQCLF_LSTM_THREADS`` overrides)."""
  if "SEQCLF_LSTM_THREADS" in os.environ:
    value = os.environ["SEQCLF_LSTM_THREADS"]
    try:
      threads = int(value)
    except ValueError:
      raise ConfigError(
        f"$SEQCLF_LSTM_THREADS must be a number of threads, got {value!r}; unset it to use every core"
      ) from None
    if threads < 1:
      raise ConfigError(
        f"$SEQCLF_LSTM_THREADS must be a positive number of threads, got {value!r}; unset it to use every core"
      )
    return threads
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_signature() -> str:
  """The CPU's model and feature flags: a library built with -march=native runs only where they match."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return platform.machine() + platform.processor()
  wanted = ("model name", "flags", "Features", "CPU part")
  return platform.machine() + "".join(sorted({line for line in lines if line.startswith(wanted)}))


def _compiler() -> list[str]:
  command = shlex.split(os.environ.get("CXX", "g++"))
  if not command or shutil.which(command[0]) is None:
    raise ConfigError(
      f"engine 'cpu_kernel' needs a C++17 compiler to build its kernel and found none "
      f"({os.environ.get('CXX', 'g++')!r} is not on PATH); install g++ or set $CXX, or use "
      "engine='fused'"
    )
  return command


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(dirs.cache_dir()) / "cpu_kernel"


def build_library() -> pathlib.Path:
  """Compiles the kernel (`MAIN` and what it includes) into the cache, once per source, flags, jaxlib and
  CPU, and returns its path. The cache key hashes every file of `SOURCES`, so an edit to any part rebuilds."""
  compiler = _compiler()
  include = jax.ffi.include_dir()
  sources = [f"{path.name}\0{path.read_text()}" for path in sorted(SOURCES.iterdir()) if path.is_file()]
  key = hashlib.sha256(
    "\0".join([*sources, *compiler, *CXXFLAGS, jaxlib.__version__, _cpu_signature()]).encode()
  ).hexdigest()[:16]
  library = _cache_dir() / f"seqclf_lstm_{key}.so"
  if library.exists():
    return library
  try:
    library.parent.mkdir(parents=True, exist_ok=True)
    scratch_dir = tempfile.TemporaryDirectory(dir=library.parent)
  except OSError as error:
    raise ConfigError(
      f"engine 'cpu_kernel' cannot build its kernel into {library.parent} ({error.strerror}); set "
      "$SEQCLF_CACHE_DIR to a writable directory, or use engine='fused'"
    ) from error
  # One build at a time per library (processes started together, say test workers, would each compile it),
  # to a temporary name then renamed, so an interrupted build never leaves a torn file.
  with scratch_dir as scratch, open(library.with_suffix(".lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if library.exists():  # built by the process that held the lock
      return library
    partial = pathlib.Path(scratch) / library.name
    command = [*compiler, *CXXFLAGS, f"-I{include}", str(MAIN), "-o", str(partial)]
    # Info, not shown unless asked for: a driver's stderr stays its one error line.
    _logger.info(
      "building the cpu_kernel engine's C++ kernel into %s (once per source, compiler, jaxlib and CPU)",
      library,
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      lines = result.stderr.strip().splitlines()
      last_lines = " | ".join(([line for line in lines if "error" in line] or lines)[:3])
      raise ConfigError(
        f"engine 'cpu_kernel' could not build its kernel ({shlex.join(command)} "
        f"exited with {result.returncode}: {last_lines}); use engine='fused'"
      )
    os.replace(partial, library)
  return library


# The ``matmul_precision`` values this engine takes (its ``matmul_precisions`` in `seqclf.rnn.engines.ENGINES`).
MATMUL_PRECISIONS = ("float32", "bfloat16")


@functools.cache
def _register() -> ctypes.CDLL:
  library = ctypes.cdll.LoadLibrary(str(build_library()))
  for symbol, target in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  return library


def has_bf16_products() -> bool:
  """Whether the kernel built for this CPU has bfloat16 products (the CPU has AVX512-BF16)."""
  return bool(_register().SeqclfLstmHasBf16())


def bf16_on_amx() -> bool:
  """Whether this process's bfloat16 products run on AMX tiles (the CPU and the build have them and Linux
  grants the tile state), rather than with ``vdpbf16ps``."""
  return bool(_register().SeqclfLstmBf16OnAmx())


def check_precision(matmul_precision: str, cell: str = "LSTM") -> None:
  """Refuses a ``matmul_precision`` the kernel lacks, or bfloat16 on a CPU without AVX512-BF16."""
  if matmul_precision not in MATMUL_PRECISIONS:
    raise ConfigError(
      f"{cell} engine 'cpu_kernel' has no matmul_precision={matmul_precision!r}; choose one of "
      f"{', '.join(MATMUL_PRECISIONS)}"
    )
  if matmul_precision == "bfloat16" and not has_bf16_products():
    raise ConfigError(
      f"{cell} engine 'cpu_kernel' computes matmul_precision='bfloat16' with AVX512-BF16 instructions, which "
      "this CPU lacks; use matmul_precision='float32'"
    )


def unavailable_reason() -> str | None:
  """None when the kernel builds and loads here; otherwise why not (for ``engine="auto"``)."""
  try:
    _register()
  except (ConfigError, OSError) as error:
    return str(error)
  return None


def _call(target: str, out_shapes, *args, num_threads: int, bf16: bool):
  _register()
  # float32 only: its ENGINES entries say so, and seqclf.rnn.rnn refuses other dtypes before this call.
  out_types = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in out_shapes]
  # vmap runs the kernel once per mapped element: it has no batch dimension beyond its own.
  return jax.ffi.ffi_call(target, out_types, vmap_method="sequential")(
    *args, num_threads=np.int64(num_threads), bf16=bf16
  )


def _stacked_weights(params):
  """[E + H, 4H]: the kernel on top of the recurrent kernel, so one matmul serves [x_t, h_{t-1}]."""
  return jnp.concatenate([params["kernel"], params["recurrent_kernel"]], axis=0)


def make_lstm(num_threads: int | None = None, matmul_precision: str = "float32"):
  """An LSTM with the engine signature of `seqclf.rnn.engines.scan.lstm`, its rows split into ``num_threads`` ranges
  (default `default_num_threads()`), its recurrent products in ``matmul_precision``."""
  check_precision(matmul_precision)
  threads = num_threads or default_num_threads()
  bf16 = matmul_precision == "bfloat16"

  def forward(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    batch, steps, _ = xs.shape
    state = (batch, steps, h0.shape[1])
    hs, cs, gates = _call(
      "seqclf_lstm_forward",
      [state, state, (batch, steps, 4 * h0.shape[1])],
      xs,
      _stacked_weights(params),
      params["bias"],
      h0,
      c0,
      step_mask,
      input_dropout_mask,
      recurrent_dropout_mask,
      num_threads=threads,
      bf16=bf16,
    )
    residuals = (params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, cs, gates)
    return (hs, (hs[:, -1], cs[:, -1]) if steps else (h0, c0)), residuals

  def backward(residuals, cotangents):
    params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, cs, gates = residuals
    d_hs, (dh_last, dc_last) = cotangents
    weights = _stacked_weights(params)
    d_xs, dh0, dc0, d_weights, d_bias = _call(
      "seqclf_lstm_backward",
      [xs.shape, h0.shape, c0.shape, weights.shape, params["bias"].shape],
      xs,
      weights,
      h0,
      c0,
      step_mask,
      input_dropout_mask,
      recurrent_dropout_mask,
      hs,
      cs,
      gates,
      d_hs,
      dh_last,
      dc_last,
      num_threads=threads,
      bf16=bf16,
    )
    input_size = xs.shape[-1]
    d_params = {"kernel": d_weights[:input_size], "recurrent_kernel": d_weights[input_size:], "bias": d_bias}
    return d_params, d_xs, dh0, dc0

  def inference(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    batch, steps, _ = xs.shape
    hs, c_last = _call(
      "seqclf_lstm_inference",
      [(batch, steps, h0.shape[1]), c0.shape],
      xs,
      _stacked_weights(params),
      params["bias"],
      h0,
      c0,
      step_mask,
      input_dropout_mask,
      recurrent_dropout_mask,
      num_threads=threads,
      bf16=bf16,
    )
    return hs, (hs[:, -1] if steps else h0, c_last)

  return hoisted.custom_vjp_engine(inference, forward, backward)


_make_cached = functools.cache(make_lstm)


def lstm(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, matmul_precision="float32"
):
  """The engine-signature LSTM (see `seqclf.rnn.lstm`), products in ``matmul_precision``."""
  return _make_cached(None, matmul_precision)(
    params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask
  )


# --- GRU ---

GRU_LANES = 16  # products.h's kLanes: each gate block of the stored gates is H rounded up to it


def make_gru(num_threads: int | None = None, matmul_precision: str = "float32"):
  """A GRU with the engine signature of `seqclf.rnn.engines.scan.gru`, its rows split into ``num_threads``
  ranges (default `seqclf.rnn.default_num_threads()`), its step products in
  ``matmul_precision``."""
  check_precision(matmul_precision, cell="GRU")
  threads = num_threads or default_num_threads()
  bf16 = matmul_precision == "bfloat16"

  def arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    weights = (params["kernel"], params["recurrent_kernel"], params["bias"])
    return (xs, *weights, h0, step_mask, input_dropout_mask, recurrent_dropout_mask)

  def forward(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    batch, steps, _ = xs.shape
    hidden = h0.shape[1]
    gate_width = 4 * -(-hidden // GRU_LANES) * GRU_LANES
    hs, gates = _call(
      "seqclf_gru_forward",
      [(batch, steps, hidden), (batch, steps, gate_width)],
      *arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask),
      num_threads=threads,
      bf16=bf16,
    )
    residuals = (params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, gates)
    return (hs, hs[:, -1] if steps else h0), residuals

  def backward(residuals, cotangents):
    params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, gates = residuals
    d_hs, dh_last = cotangents
    d_xs, dh0, d_kernel, d_recurrent_kernel, d_bias = _call(
      "seqclf_gru_backward",
      [xs.shape, h0.shape, params["kernel"].shape, params["recurrent_kernel"].shape, params["bias"].shape],
      xs,
      params["kernel"],
      params["recurrent_kernel"],
      h0,
      step_mask,
      input_dropout_mask,
      recurrent_dropout_mask,
      hs,
      gates,
      d_hs,
      dh_last,
      num_threads=threads,
      bf16=bf16,
    )
    return {"kernel": d_kernel, "recurrent_kernel": d_recurrent_kernel, "bias": d_bias}, d_xs, dh0

  def inference(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    (hs,) = _call(
      "seqclf_gru_inference",
      [(*xs.shape[:2], h0.shape[1])],
      *arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask),
      num_threads=threads,
      bf16=bf16,
    )
    return hs, hs[:, -1] if xs.shape[1] else h0

  return hoisted.custom_vjp_engine(inference, forward, backward)


_make_gru_cached = functools.cache(make_gru)


def gru(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, matmul_precision="float32"):
  """The engine-signature GRU (see `seqclf.rnn.gru`), products in ``matmul_precision``."""
  return _make_gru_cached(None, matmul_precision)(
    params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask
  )

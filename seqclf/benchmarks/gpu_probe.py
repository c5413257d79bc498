r"""What `benchmarks/gpu_check.sh` asks of a machine before it trusts it, one question per process.

  python -m seqclf.benchmarks.gpu_probe versions   # Python, jax, jaxlib, the CUDA plugin, flax, optax, torch
  python -m seqclf.benchmarks.gpu_probe devices    # JAX's devices, their compute capability, whether mosaic can run
  python -m seqclf.benchmarks.gpu_probe cuda       # the CUDA root Mosaic GPU will use and whether ptxas is in it
  python -m seqclf.benchmarks.gpu_probe smoke      # a 10-line Mosaic GPU kernel, compiled, run and checked
  python -m seqclf.benchmarks.gpu_probe pingpong   # a ring over an 8-CTA cluster: TMA, wgmma, DSMEM, mbarriers

Each prints ``key: value`` lines; the script runs each under its own timeout, so a hang in one (a CUDA
initialisation that never returns) costs that question only. ``cuda`` ends with ``CUDA_ROOT=PATH`` when
jax found no toolchain with ``bin/ptxas`` but PATH has one: jax 0.11 reads ``CUDA_ROOT`` first, and
otherwise takes an installed ``nvidia`` namespace package even when it holds no ptxas (its path then
reads "None"), which leaves Mosaic GPU without an assembler.
"""

import importlib.metadata
import os
import sys

DEFAULT_CUDA_ROOT = "/usr/local/cuda"
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax", "optax")
# Also asked: what the check uses when present (the peer, pytest's per-test timeout).
OPTIONAL = ("ml-collections", "torch", "pytest", "pytest-timeout")


def versions() -> None:
  print(f"python: {sys.version.split()[0]} ({sys.executable})")
  for package in (*PACKAGES, *OPTIONAL):
    try:
      print(f"{package}: {importlib.metadata.version(package)}")
    except importlib.metadata.PackageNotFoundError:
      print(f"{package}: not installed")


def devices() -> None:
  import jax

  print(f"backend: {jax.default_backend()}", flush=True)
  for device in jax.devices():
    capability = getattr(device, "compute_capability", None)
    print(
      f"device: {device.id} {device.device_kind}"
      + (f" (compute capability {capability})" if capability else ""),
      flush=True,
    )
  from seqclf.rnn.engines import mosaic_gpu  # after the devices: they are worth having even if this fails

  print(f"mosaic: {mosaic_gpu.unavailable_reason() or 'available'}")


def _has_ptxas(root) -> bool:
  return bool(root) and os.path.isfile(os.path.join(str(root), "bin", "ptxas"))


def cuda() -> None:
  from jax._src import lib  # where jax 0.11 keeps the CUDA root it found; Mosaic GPU reads it

  found = lib.cuda_path
  print(f"CUDA_ROOT in the environment: {os.environ.get('CUDA_ROOT', 'unset')}")
  print(f"jax's CUDA root: {found!r} (bin/ptxas {'present' if _has_ptxas(found) else 'absent'})")
  # Mosaic GPU (jax/experimental/mosaic/gpu/core.py) takes jax's root, else /usr/local/cuda.
  mosaic_root = found or DEFAULT_CUDA_ROOT
  print(
    f"Mosaic GPU's CUDA root: {mosaic_root} (bin/ptxas {'present' if _has_ptxas(mosaic_root) else 'absent'})"
  )
  if not _has_ptxas(mosaic_root) and _has_ptxas(DEFAULT_CUDA_ROOT):
    print(f"CUDA_ROOT={DEFAULT_CUDA_ROOT}")


def smoke() -> None:
  """out = 2 x + 1 on one [64, 128] tile: Mosaic GPU's compiler, ptxas and a launch, or its interpreter
  off a GPU (the `mosaic` engine's own rule)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.experimental.pallas import mosaic_gpu as plgpu

  from seqclf.rnn.engines import hoisted, mosaic_gpu

  reason = mosaic_gpu.unavailable_reason()
  if reason is not None:
    raise SystemExit(f"error: {reason}")

  def body(x_gmem, out_gmem):
    out_gmem[...] = plgpu.load(x_gmem, layout=plgpu.Layout.WGMMA, optimized=False) * 2.0 + 1.0

  interpret = plgpu.InterpretGPUParams() if hoisted.interpret() else None
  x = jnp.arange(64 * 128, dtype=jnp.float32).reshape(64, 128)
  out = plgpu.kernel(body, out_type=jax.ShapeDtypeStruct(x.shape, x.dtype), interpret=interpret)(x)
  np.testing.assert_array_equal(np.asarray(out), 2 * np.asarray(x) + 1)
  print(f"smoke: ok ({'interpreted' if interpret else 'on ' + jax.devices()[0].device_kind})")


# The ping-pong's ring: N = 8 as the engine's default; 12 rounds, one and a half times round, so a tile
# that moved the wrong way, or not at all, ends in the wrong CTA.
PINGPONG_CLUSTER_SIZE = 8
PINGPONG_ROUNDS = 12


def pingpong() -> None:
  """`seqclf.rnn.engines.mosaic_exchange.pingpong` over an 8-CTA cluster, checked exactly; off a GPU
  lowered for CUDA only (the interpreter has no remote stores). A deadlock hangs here, in a process of
  its own, before any other cluster kernel runs."""
  import time

  import jax
  import numpy as np

  from seqclf import lowering
  from seqclf.benchmarks import faults
  from seqclf.rnn.engines import mosaic_exchange, mosaic_gpu

  reason = mosaic_gpu.unavailable_reason()
  if reason is not None:
    raise SystemExit(f"error: {reason}")
  faults.inject(faults.unit("gpu_probe", "pingpong"))
  n, rounds = PINGPONG_CLUSTER_SIZE, PINGPONG_ROUNDS
  function = jax.jit(mosaic_exchange.pingpong(n, rounds))
  tiles, identity = mosaic_exchange.pingpong_inputs(n)
  if jax.default_backend() != "gpu":
    lowering.lower(function, tiles, identity, platform="gpu")
    print(f"pingpong: lowered for CUDA (N = {n}), not run: {mosaic_exchange.INTERPRETER_REASON}")
    return
  start = time.perf_counter()
  out = jax.block_until_ready(function(tiles, identity))
  seconds = time.perf_counter() - start
  np.testing.assert_array_equal(np.asarray(out), mosaic_exchange.pingpong_expected(tiles, rounds))
  print(
    f"pingpong: ok (N = {n}, {rounds} rounds, {seconds:.2f} s with compile, on {jax.devices()[0].device_kind})"
  )


if __name__ == "__main__":
  questions = {"versions": versions, "devices": devices, "cuda": cuda, "smoke": smoke, "pingpong": pingpong}
  if len(sys.argv) != 2 or sys.argv[1] not in questions:
    raise SystemExit(f"error: pass one of {', '.join(questions)}")
  questions[sys.argv[1]]()

"""The `cpu_kernel` layer's forward+backward time with this tree's kernel against another revision's kernel,
both built with the same compiler and flags and alternated in one process.

  python benchmarks/micro/cpu_kernel_ab.py --baseline=HEAD~1 --shape=64,500,32,100 --repeats=7

The baseline's handlers are registered under their names plus ``_baseline``; both sides run the same
jitted layer (this tree's Python wrapper), compiled before the clock. Prints per cell and side the median
and range of ``--repeats`` rounds (each the median of ``--calls`` blocked calls), and their ratio.
"""

import argparse
import os
import pathlib
import shlex
import statistics
import subprocess
import tempfile
import time

from seqclf import presets

presets.apply("cpu_heap")  # before JAX starts its backend, as the drivers' default preset on a CPU

import ctypes  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from seqclf.rnn import init_gru_params, init_params  # noqa: E402
from seqclf.rnn.engines import cpu_kernel  # noqa: E402

SUFFIX = "_baseline"


def build_baseline(revision: str, scratch: pathlib.Path) -> None:
  """Builds ``revision``'s kernel source and registers its handlers as ``<target>_baseline``."""
  root = pathlib.Path(__file__).resolve().parents[2]
  source = cpu_kernel.SOURCES.relative_to(root)
  archive = subprocess.run(
    ["git", "-C", str(root), "archive", revision, str(source)], capture_output=True, check=True
  )
  subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
  library = scratch / "baseline.so"
  compiler = shlex.split(os.environ.get("CXX", "g++"))
  include = f"-I{jax.ffi.include_dir()}"
  command = [
    *compiler,
    *cpu_kernel.CXXFLAGS,
    include,
    str(scratch / source / "cpu_kernel.cc"),
    "-o",
    str(library),
  ]
  built = subprocess.run(command, capture_output=True, text=True, check=False)
  if built.returncode != 0:
    raise SystemExit(f"error: {revision}'s kernel did not build: {built.stderr.strip()[-2000:]}")
  handlers = ctypes.cdll.LoadLibrary(str(library))
  for symbol, target in cpu_kernel._TARGETS.items():  # noqa: SLF001 -- the same handlers under other names
    jax.ffi.register_ffi_target(target + SUFFIX, jax.ffi.pycapsule(getattr(handlers, symbol)), platform="cpu")


def compiled_step(cell: str, shape: tuple[int, int, int, int], suffix: str):
  """The layer's jitted forward+backward over the article's shape, compiled against ``<target><suffix>``."""
  batch, steps, inputs, hidden = shape
  init, make, states = {
    "lstm": (init_params, cpu_kernel.make_lstm, 2),
    "gru": (init_gru_params, cpu_kernel.make_gru, 1),
  }[cell]
  params = init(jax.random.key(0), inputs, hidden)
  xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))
  state = [jnp.zeros((batch, hidden))] * states
  ones_e, ones_h, mask = jnp.ones((batch, inputs)), jnp.ones((batch, hidden)), jnp.ones((batch, steps), bool)
  layer = make()

  def loss(p, x):
    return jnp.sum(layer(p, x, *state, mask, ones_e, ones_h)[0] * 0.01)

  original = cpu_kernel._call  # noqa: SLF001 -- the targets are named at trace time

  def renamed(target, *args, **kwargs):
    return original(target + suffix, *args, **kwargs)

  cpu_kernel._call = renamed  # noqa: SLF001
  try:
    step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
  finally:
    cpu_kernel._call = original  # noqa: SLF001
  return step, (params, xs)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--baseline", required=True, help="a git revision whose kernel source to compare")
  parser.add_argument("--shape", default="64,500,32,100", help="B,T,E,H")
  parser.add_argument("--cells", default="lstm,gru")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--calls", type=int, default=5)
  args = parser.parse_args()
  shape = tuple(int(n) for n in args.shape.split(","))
  with tempfile.TemporaryDirectory() as scratch:
    build_baseline(args.baseline, pathlib.Path(scratch))
    print(
      f"shape B,T,E,H = {args.shape}, {cpu_kernel.default_num_threads()} threads, baseline {args.baseline}"
    )
    for cell in args.cells.split(","):
      sides = {
        name: compiled_step(cell, shape, suffix) for name, suffix in (("baseline", SUFFIX), ("this tree", ""))
      }
      for step, inputs in sides.values():  # a first call each, untimed: page faults, thread pool start
        jax.block_until_ready(step(*inputs))
      times = {name: [] for name in sides}
      for _ in range(args.repeats):
        for name, (step, inputs) in sides.items():  # alternated, so drift in the machine's load hits both
          calls = []
          for _ in range(args.calls):
            start = time.perf_counter()
            jax.block_until_ready(step(*inputs))
            calls.append(time.perf_counter() - start)
          times[name].append(statistics.median(calls))
      for name, seconds in times.items():
        median = statistics.median(seconds)
        print(
          f"{cell} {name:>9}: {1e3 * median:7.2f} ms per fwd+bwd (range {1e3 * min(seconds):.2f}-"
          f"{1e3 * max(seconds):.2f})"
        )
      ratio = statistics.median(times["this tree"]) / statistics.median(times["baseline"])
      print(f"{cell} this tree / baseline: {ratio:.3f}")


if __name__ == "__main__":
  main()

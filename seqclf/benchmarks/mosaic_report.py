"""The mosaic sweep's measurement and report: each mode timed, then held against ``fused``; each
configuration's rows, measured beside the cost model's predicted range; the exchange microbenchmark's rows.

Apart from `seqclf/benchmarks/mosaic_sweep.py` because that driver defines absl flags when imported, and one
process cannot import two drivers whose flags share names (--steps, --workdir, ...): this module has none,
so tests and other tools can import it anywhere.
"""

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from seqclf import atomic, timing
from seqclf.rnn.engines import fused, mosaic_cost, mosaic_gpu

HEADER = ["layout", "N", "precision", "mode", "µs/step", "predicted µs/step", "vs predicted", "ms", "± ms"]
HEADER += ["compile s", "max rel err vs fused", "error"]


def predicted_us_per_step(shape: dict) -> dict | None:
  """{mode: [low, high] µs per step} `mosaic_cost` predicts for ``shape`` (the sweep's fields; "layout"
  "units" where absent) on an H200; None where the configuration does not fit a GPU (the interpreter runs
  it anyway)."""
  size, precision = shape["cluster_size"], shape["matmul_precision"]
  layout = shape.get("layout", "units")
  if not mosaic_cost.LAYOUTS[layout].fits(size, precision):
    return None
  sizes = {key: shape[key] for key in ("batch", "steps", "input_size", "hidden")}
  low, high = mosaic_cost.predict_range(size, precision, layout=layout, **sizes)
  return {
    mode: [low.call_us[mode] / shape["steps"], high.call_us[mode] / shape["steps"]] for mode in low.call_us
  }


def where(measured: float, predicted: list | None) -> str:
  """Where a measured µs/step falls against its predicted [low, high]: "below", "within", "above" or "–"."""
  if predicted is None:
    return "–"
  low, high = predicted
  return "below" if measured < low else "above" if measured > high else "within"


def functions(lstm) -> dict:
  """The timed modes of an engine-signature ``lstm``, jitted: "fwd" (the outputs, no gradient), "final"
  (the final state of ``return_sequences=False``, as evaluation runs it) and "fwd_bwd" (the gradients)."""

  def forward(params, *args):
    return lstm(params, *args)[0]

  def final(params, *args):
    return lstm(params, *args, return_sequences=False)[1]

  def forward_backward(params, *args):
    return jax.grad(lambda p, x: jnp.sum(lstm(p, x, *args[1:])[0] ** 2), argnums=(0, 1))(params, args[0])

  return {"fwd": jax.jit(forward), "final": jax.jit(final), "fwd_bwd": jax.jit(forward_backward)}


def relative_error(actual, expected_leaves) -> float:
  """Largest |actual - expected| over the largest |expected|, worst over the leaves."""
  return max(
    float(np.max(np.abs(np.asarray(a) - e))) / max(float(np.max(np.abs(e))), 1e-30)
    for a, e in zip(jax.tree.leaves(actual), expected_leaves)
  )


class References:
  """``fused``'s results per mode on the sweep's inputs (float32 products), the leaves as numpy arrays:
  each computed on first use, which `measure` makes after the kernel's timing, and with a ``directory``
  kept there per mode and ``shape`` (a name for the inputs), so each process of a check that times one
  configuration reuses what another computed (three compiles at T = 500)."""

  def __init__(self, args, shape: str, directory: str = ""):
    self.args, self.shape, self.directory, self.cache = args, shape, directory, {}

  def path(self, mode: str) -> str:
    return os.path.join(self.directory, f"fused_{mode}_{self.shape}.npz")

  def __call__(self, mode: str) -> list:
    if mode not in self.cache:
      self.cache[mode] = self._load(mode) or self._compute(mode)
    return self.cache[mode]

  def _load(self, mode: str) -> list | None:
    if not self.directory or not os.path.exists(self.path(mode)):
      return None
    with np.load(self.path(mode)) as saved:
      return [saved[f"arr_{i}"] for i in range(len(saved.files))]

  def _compute(self, mode: str) -> list:
    with jax.default_matmul_precision("float32"):  # float32 products, not TF32
      result = jax.device_get(functions(fused.lstm)[mode](*self.args))
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(result)]
    if self.directory:
      os.makedirs(self.directory, exist_ok=True)
      atomic.write_atomically(self.path(mode), lambda f: np.savez(f, *leaves))
    return leaves


def measure(lstm, args, repeats: int, reference, report) -> None:
  """Times each mode of ``lstm`` (`functions`) and reports it at once, ``report(mode, stats)`` with
  ``max_rel_error_vs_fused`` None, then compares it with ``reference(mode)`` (`References`) and reports
  it again with the error: a limit that cuts the reference loses no timing. Raises what the kernel raises."""
  for mode, function in functions(lstm).items():
    compiled, compile_s = timing.compile_seconds(function, *args)
    stats = timing.steady_state(compiled, *args, repeats=repeats)
    stats = {"compile_s": compile_s, "max_rel_error_vs_fused": None, **stats}
    report(mode, stats)
    report(mode, {**stats, "max_rel_error_vs_fused": relative_error(compiled(*args), reference(mode))})


def results_of(shape: dict, measured: dict, predicted: dict | None) -> tuple[list, list]:
  """The JSON runs and markdown rows of one configuration's measurements, each beside its prediction."""
  runs, rows = [], []
  for mode, stats in measured.items():
    us_per_step = 1e6 * stats["median_s"] / shape["steps"]
    expected = None if predicted is None else predicted[mode]
    runs.append(
      {**shape, "mode": mode, "us_per_step": us_per_step, "predicted_us_per_step": expected, **stats}
    )
    rows.append(
      [
        shape.get("layout", "units"),
        shape["cluster_size"],
        shape["matmul_precision"],
        mode,
        f"{us_per_step:.2f}",
        "–" if expected is None else f"{expected[0]:.2f}-{expected[1]:.2f}",
        where(us_per_step, expected),
        f"{1e3 * stats['median_s']:.3f}",
        f"{1e3 * (stats['max_s'] - stats['min_s']) / 2:.3f}",
        f"{stats['compile_s']:.2f}",
        "–" if stats["max_rel_error_vs_fused"] is None else f"{stats['max_rel_error_vs_fused']:.2g}",
        "",
      ]
    )
  return runs, rows


# The exchange microbenchmark (`seqclf.benchmarks.mosaic_exchange`): µs per step beside the model's term.
EXCHANGE_HEADER = ["N", "precision", "pattern", "calls/step", "arrivals/step", "µs/step", "model µs/step"]
EXCHANGE_HEADER += ["compile s", "note"]


def model_exchange_us(cluster_size: int, matmul_precision: str) -> list:
  """The forward's exchange term of `mosaic_cost` (µs per step on one CTA) for this configuration of the
  "units" layout, whose all-gather the microbenchmark runs: [low, high]."""
  return [
    cost.forward.exchange
    for cost in mosaic_cost.predict_range(cluster_size, matmul_precision, layout="units")
  ]


def exchange_result(shape: dict, stats: dict | None, note: str = "") -> tuple[dict, list]:
  """One exchange measurement as a JSON run and a markdown row: ``shape`` {cluster_size, matmul_precision,
  pattern, steps, calls_per_step}; ``stats`` `seqclf.timing` statistics with compile_s, or None for a
  pattern that did not run (``note`` says why)."""
  size, precision = shape["cluster_size"], shape["matmul_precision"]
  model = model_exchange_us(size, precision)
  # Every call arrives once per thread of the sender's warpgroup on the receiver's barrier, from N senders.
  arrivals = shape["calls_per_step"] * mosaic_gpu.WARPGROUP_THREADS
  run = {**shape, "arrivals_per_step": arrivals, "model_us_per_step": model}
  if stats is None:
    run["note"] = note
    us = compile_s = "–"
  else:
    run.update(stats, us_per_step=1e6 * stats["median_s"] / shape["steps"])
    us, compile_s = f"{run['us_per_step']:.3f}", f"{stats['compile_s']:.2f}"
  row = [
    size,
    precision,
    shape["pattern"],
    shape["calls_per_step"],
    arrivals,
    us,
    f"{model[0]:.3f}-{model[1]:.3f}",
  ]
  return run, row + [compile_s, note]


def dump_summary(folder: str) -> str:
  """What Mosaic GPU's dumps in ``folder`` say of the kernels it compiled (``MOSAIC_GPU_DUMP_PTXAS``:
  ``ptxas -v``'s report; ``MOSAIC_GPU_DUMP_SASS``: nvdisasm's listing; any text file, the step's own
  output included): registers and spilled bytes per kernel, and ``BAR.SYNC`` instructions per listing,
  each in the order found; "" when it holds none."""
  texts = []
  for root, _, names in sorted(os.walk(folder)):
    for name in sorted(names):
      with open(os.path.join(root, name), errors="replace") as f:
        texts.append(f.read())
  text = "\n".join(texts)
  registers = re.findall(r"Used (\d+) registers", text)
  spills = [
    int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
  ]
  # nvdisasm lists each kernel from a ".text.<name>" section; BAR.SYNC (and its .DEFER_BLOCKING form) is
  # the warpgroup barrier an automatic barrier or commit_smem becomes.
  listings = re.split(r"^\s*\.section\s+\.text\.", text, flags=re.MULTILINE)[1:]
  bars = [len(re.findall(r"\bBAR\.SYNC\b", listing)) for listing in listings]
  parts = []
  if registers:
    parts.append(f"registers {'/'.join(registers)}")
  if spills:
    parts.append(f"spilled bytes {'/'.join(map(str, spills))}")
  if bars:
    parts.append(f"BAR.SYNC {'/'.join(map(str, bars))}")
  return "; ".join(parts)


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] != "dump":
    raise SystemExit("error: pass dump FOLDER")
  print(dump_summary(sys.argv[2]) or "no ptxas report or SASS found")

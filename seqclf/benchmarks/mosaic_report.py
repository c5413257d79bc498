"""The mosaic sweep's report: each configuration's rows, measured beside the cost model's prediction.

Apart from `seqclf/benchmarks/mosaic_sweep.py` because that driver defines absl flags when imported, and one
process cannot import two drivers whose flags share names (--steps, --workdir, ...): this module has none,
so tests and other tools can import it anywhere.
"""

from seqclf.rnn.engines import mosaic_cost, mosaic_gpu

HEADER = ["N", "precision", "mode", "µs/step", "predicted µs/step", "ms", "± ms", "compile s"]
HEADER += ["max rel err vs fused", "error"]


def predicted_us_per_step(shape: dict) -> dict | None:
  """{mode: µs per step} `mosaic_cost` predicts for ``shape`` (the sweep's fields) on an H200; None where
  the configuration does not fit a GPU (the interpreter runs it anyway)."""
  size, precision = shape["cluster_size"], shape["matmul_precision"]
  if not mosaic_gpu.fits(size, precision):
    return None
  sizes = {key: shape[key] for key in ("batch", "steps", "input_size", "hidden")}
  cost = mosaic_cost.predict(size, precision, **sizes)
  return {mode: us / shape["steps"] for mode, us in cost.call_us.items()}


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
        shape["cluster_size"],
        shape["matmul_precision"],
        mode,
        f"{us_per_step:.2f}",
        "–" if expected is None else f"{expected:.2f}",
        f"{1e3 * stats['median_s']:.3f}",
        f"{1e3 * (stats['max_s'] - stats['min_s']) / 2:.3f}",
        f"{stats['compile_s']:.2f}",
        f"{stats['max_rel_error_vs_fused']:.2g}",
        "",
      ]
    )
  return runs, rows


# The exchange microbenchmark (`seqclf.benchmarks.mosaic_exchange`): µs per step beside the model's term.
EXCHANGE_HEADER = ["N", "precision", "pattern", "calls/step", "arrivals/step", "µs/step", "model µs/step"]
EXCHANGE_HEADER += ["compile s", "note"]


def model_exchange_us(cluster_size: int, matmul_precision: str) -> float:
  """The forward's exchange term of `mosaic_cost` (µs per step on one CTA) for this configuration."""
  return mosaic_cost.predict(cluster_size, matmul_precision).forward.exchange


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
  row = [size, precision, shape["pattern"], shape["calls_per_step"], arrivals, us, f"{model:.3f}"]
  return run, row + [compile_s, note]

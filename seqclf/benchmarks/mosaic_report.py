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

"""The mosaic sweep's report: each configuration's rows, measured beside the cost model's predicted range.

Apart from `seqclf/benchmarks/mosaic_sweep.py` because that driver defines absl flags when imported, and one
process cannot import two drivers whose flags share names (--steps, --workdir, ...): this module has none,
so tests and other tools can import it anywhere.
"""

from seqclf.rnn.engines import mosaic_cost

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
        f"{stats['max_rel_error_vs_fused']:.2g}",
        "",
      ]
    )
  return runs, rows

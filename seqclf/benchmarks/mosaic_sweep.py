r"""The ``mosaic`` engine's configurations on a GPU: cluster size N x matmul_precision, µs per step.

  python -m seqclf.benchmarks.mosaic_sweep                       # B=64, T=500, E=32, H=100: the article's LSTM
  python -m seqclf.benchmarks.mosaic_sweep --cluster_sizes=8 --precisions=float32 --steps=100

For every configuration that fits a CTA's shared memory (`seqclf.rnn.engines.mosaic_gpu.fits`), best predicted
first (so a timeout still leaves the interesting rows): compile time, forward and forward+backward time
per call and per time step, and the largest error against ``fused`` (relative to the largest value) of
the outputs and of the gradients, measured on the same inputs, so a fast but wrong kernel shows. Each
mode is timed before ``fused`` is computed for it, and its row written at once (error "–" until then);
``--reference_dir`` keeps ``fused``'s results on disk per shape for the next process. A
configuration that fails to compile or run is a row with its error (and a line on stderr starting
``ERROR``), and the sweep goes on. Beside each measured µs/step is the one `seqclf.rnn.engines.mosaic_cost`
predicts for an H200, where a GPU runs the configuration (docs/kernels.md). Writes
``WORKDIR/mosaic_sweep.json`` and ``mosaic_sweep.md`` after every mode. A fault that kills the process (an illegal address) or a hang ends it: to keep the other
configurations, run each in its own process (``--cluster_sizes=8 --precisions=float32``), as
`benchmarks/gpu_check.sh` does.

Off a GPU the kernels run in the Mosaic GPU interpreter: a check of the driver, not a speed.
"""

import os
import sys

import jax
import jax.numpy as jnp
from absl import flags

from seqclf import cli, results
from seqclf.benchmarks import faults
from seqclf.benchmarks.mosaic_report import HEADER, References, measure, predicted_us_per_step, results_of
from seqclf.errors import ConfigError
from seqclf.rnn import init_params
from seqclf.rnn.engines import mosaic_cost, mosaic_gpu

_CLUSTER_SIZES = cli.define_positive_int_list(
  "cluster_sizes", list(mosaic_gpu.CLUSTER_SIZES), "Cluster sizes N (CTAs per 64-row batch block)."
)
_PRECISIONS = flags.DEFINE_list("precisions", ["float32", "bfloat16"], "matmul_precision values.")
_LAYOUTS = flags.DEFINE_list(
  "layouts", ["units"], f"Kernel layouts (mosaic_cost.LAYOUTS: {', '.join(mosaic_cost.LAYOUTS)})."
)
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size B.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 500, "Sequence length T.", lower_bound=1)
_INPUT_SIZE = flags.DEFINE_integer("input_size", 32, "Input (embedding) size E.", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden", 100, "Hidden size H (at most 128).", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement.", lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", "runs/mosaic_sweep", "Where mosaic_sweep.json goes.")
_REFERENCE_DIR = flags.DEFINE_string(
  "reference_dir",
  "",
  "Where fused's results per mode and shape are kept and reused across runs (default: computed in this "
  "process only).",
)


def configurations(cluster_sizes, precisions) -> list[tuple[int, str]]:
  """The (N, precision) pairs that fit, largest N first, float32-level before bfloat16 at equal N."""
  for precision in precisions:
    if precision not in mosaic_gpu.MATMUL_PRECISIONS:
      raise ConfigError(
        f"unknown --precisions value {precision!r}; choose from {', '.join(mosaic_gpu.MATMUL_PRECISIONS)}"
      )
  for size in cluster_sizes:
    if size not in mosaic_gpu.CLUSTER_SIZES:
      raise ConfigError(f"--cluster_sizes must be in {mosaic_gpu.CLUSTER_SIZES}, got {size}")
  gpu = jax.default_backend() == "gpu"
  if not gpu and max(cluster_sizes) > mosaic_gpu.INTERPRET_CLUSTER_SIZE:
    raise ConfigError(
      f"off a GPU the kernels run in the interpreter, which handles --cluster_sizes up to "
      f"{mosaic_gpu.INTERPRET_CLUSTER_SIZE} (see mosaic_gpu.INTERPRET_CLUSTER_SIZE)"
    )
  pairs = [(n, p) for n in sorted(cluster_sizes, reverse=True) for p in precisions]
  return [(n, p) for n, p in pairs if not gpu or mosaic_gpu.fits(n, p)]


def main(argv):
  cli.require_no_arguments(argv)
  reason = mosaic_gpu.unavailable_reason()
  if reason is not None:
    raise ConfigError(reason)
  b, t, e, h = _BATCH.value, _STEPS.value, _INPUT_SIZE.value, _HIDDEN.value
  if h > mosaic_gpu.PADDED_HIDDEN:
    raise ConfigError(f"--hidden must be at most {mosaic_gpu.PADDED_HIDDEN} for the mosaic engine, got {h}")
  pairs = configurations(_CLUSTER_SIZES.value, _PRECISIONS.value)
  keys = jax.random.split(jax.random.key(0), 3)
  args = (
    init_params(keys[0], e, h),
    jax.random.normal(keys[1], (b, t, e)),
    jnp.zeros((b, h)),
    jnp.zeros((b, h)),
    jnp.ones((b, t), bool),
    jnp.ones((b, e)),
    jnp.ones((b, h)),
  )
  reference = References(args, f"B{b}_T{t}_E{e}_H{h}", _REFERENCE_DIR.value)
  meta = results.collect_meta(
    flags={
      k: flags.FLAGS[k].value
      for k in ("cluster_sizes", "precisions", "layouts", "batch", "steps", "input_size", "hidden", "repeats")
    }
  )
  path = os.path.join(_WORKDIR.value, "mosaic_sweep.json")
  for layout in _LAYOUTS.value:
    if layout not in mosaic_cost.LAYOUTS:
      raise ConfigError(f"unknown --layouts value {layout!r}; choose from {', '.join(mosaic_cost.LAYOUTS)}")
  runs, rows = [], []

  def write(all_runs, all_rows):
    results.write_json_atomic(
      path, {"schema_version": results.SCHEMA_VERSION, "kind": "mosaic_sweep", "meta": meta, "runs": all_runs}
    )
    results.write_text_atomic(
      os.path.join(_WORKDIR.value, "mosaic_sweep.md"), results.markdown_table(HEADER, all_rows)
    )

  for (size, precision), layout in [(pair, layout) for pair in pairs for layout in _LAYOUTS.value]:
    lstm = mosaic_cost.LAYOUTS[layout].make_lstm(precision, cluster_size=size)
    shape = {
      "layout": layout,
      "cluster_size": size,
      "matmul_precision": precision,
      "batch": b,
      "steps": t,
      "input_size": e,
      "hidden": h,
    }
    measured = {}
    predicted = predicted_us_per_step(shape)

    def report(mode, stats, shape=shape, measured=measured, predicted=predicted):
      # Both files as each mode is timed and again once it is checked: a kill loses only what is in flight.
      measured[mode] = stats
      new_runs, new_rows = results_of(shape, measured, predicted)
      write(runs + new_runs, rows + new_rows)

    try:
      faults.inject(faults.unit("mosaic_sweep", f"N={size}", precision))
      measure(lstm, args, _REPEATS.value, reference, report)
    except Exception as error:  # a failing configuration is a result too; the others still run
      message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
      new_runs, new_rows = results_of(shape, measured, predicted)
      runs.extend([*new_runs, {**shape, "error": message}])
      rows.extend([*new_rows, [layout, size, precision, "–", "–", "–", "–", "–", "–", "–", "–", message]])
      print(
        f"ERROR {faults.unit('mosaic_sweep', f'N={size}', precision)}: {message}", file=sys.stderr, flush=True
      )
    else:
      new_runs, new_rows = results_of(shape, measured, predicted)
      runs.extend(new_runs)
      rows.extend(new_rows)
      print(results.markdown_table(HEADER, new_rows), flush=True)
    write(runs, rows)
  print(results.markdown_table(HEADER, rows))
  print(f"wrote {path}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

r"""Puts benchmark results from several devices side by side: a markdown table and PNG plots.

  python -m seqclf.benchmarks.compare runs/cpu runs/h200 --out=runs/compare
  python -m seqclf.benchmarks.compare a/results.json b/results.json --out=runs/compare --baseline="cpu x4"

Each RESULT is a results file or a directory holding ``results.json`` (`seqclf.benchmarks.article`) and/or
``lstm_engines.json`` (`seqclf.benchmarks.lstm_engines`), directly or one level down. Every article results file
becomes one device column, named from its ``meta`` (e.g. "gpu x1 (NVIDIA H200)"). Writes to OUT:

* ``compare.md``: per variant, s/epoch (median over epochs and seeds), examples/s, final test accuracy
  (mean over seeds) per device, and the speed-up of each device over the baseline device; then the sources.
* ``epoch_time.png``, ``test_accuracy.png``, and ``engine_sweep.png`` when there are engine sweeps.

Article results are only merged when they were trained on the same data setup (`sources.CONFIG_KEYS`);
times on different review lengths or batch sizes do not compare, so that needs ``--allow_config_mismatch``.

This module is the driver (flags, `write_comparison`); `sources` loads, checks and labels the files,
`table` writes compare.md, `plots` draws the PNGs (the only module that imports matplotlib).
"""

import os
import types

from absl import flags

from seqclf import cli, results
from seqclf.benchmarks.compare import plots
from seqclf.benchmarks.compare.sources import check_configs, load_sources
from seqclf.benchmarks.compare.table import comparison_markdown, group_rows
from seqclf.errors import UsageError


def _define_flags() -> types.SimpleNamespace:
  """The driver's flags, defined when it runs (``sources``, ``table`` and ``plots`` import this package)."""
  return types.SimpleNamespace(
    out=flags.DEFINE_string("out", None, "Directory for compare.md and the plots (required)."),
    baseline=flags.DEFINE_string(
      "baseline",
      None,
      "Device column the speed-ups are relative to: its label or a unique start of it, e.g. 'cpu x1'."
      " Default: the first.",
    ),
    allow_config_mismatch=flags.DEFINE_bool(
      "allow_config_mismatch",
      False,
      "Merge article results even if their configs differ in maxlen, batch_size or top_words.",
    ),
  )


def write_comparison(
  paths: list[str], out: str, *, baseline: str | None = None, allow_config_mismatch: bool = False
) -> list[str]:
  """Loads ``paths``, checks they compare, and writes compare.md and the plots to ``out``.

  Returns:
    The paths written, compare.md first.
  """
  sources = load_sources(paths)
  article = [source for source in sources if source.kind == "article"]
  check_configs(article, allow_config_mismatch)
  sweeps = [source for source in sources if source.kind == "lstm_engines"]
  for source in sweeps:
    if not any(run["mode"] == "fwd_bwd" for run in source.runs):
      raise UsageError(
        f"{source.path} has no fwd_bwd measurement to plot; re-run seqclf.benchmarks.lstm_engines "
        "until it finishes a shape, or leave the file out"
      )
  if article or sweeps:
    plots.matplotlib_parts()  # a missing extra fails before anything is written
  markdown = comparison_markdown(sources, baseline)
  written = [os.path.join(out, "compare.md")]
  results.write_text_atomic(written[0], markdown, flag="--out")
  if article:
    rows, labels = group_rows(article), [source.label for source in article]
    written.append(os.path.join(out, "epoch_time.png"))
    plots.plot_epoch_time(rows, labels, written[-1])
    written.append(os.path.join(out, "test_accuracy.png"))
    plots.plot_test_accuracy(rows, labels, written[-1])
  if sweeps:
    written.append(os.path.join(out, "engine_sweep.png"))
    plots.plot_engine_sweep(sweeps, written[-1])
  return written


def main(argv, options: types.SimpleNamespace):
  if len(argv) < 2:
    raise UsageError(
      "no results given; pass results.json files or benchmark workdirs, e.g. "
      "python -m seqclf.benchmarks.compare runs/a runs/b --out=runs/compare"
    )
  if not options.out.value:
    raise UsageError("--out is required: the directory for compare.md and the plots")
  written = write_comparison(
    argv[1:],
    options.out.value,
    baseline=options.baseline.value,
    allow_config_mismatch=options.allow_config_mismatch.value,
  )
  with open(written[0]) as f:
    print(f.read())
  print("wrote " + ", ".join(written))


def run():
  options = _define_flags()
  cli.run(lambda argv: main(argv, options))


if __name__ == "__main__":
  run()

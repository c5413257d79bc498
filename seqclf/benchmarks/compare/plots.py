"""The comparison's PNG plots: seconds per epoch, test accuracy per epoch, the engine sweep.

The one module that uses matplotlib (the ``plots`` extra), imported where a plot is drawn.
"""

import io

from seqclf import optional
from seqclf.atomic import write_atomically
from seqclf.benchmarks.compare.sources import Source
from seqclf.benchmarks.compare.table import Row, accuracy_curve, format_seconds, median_epoch_s


def matplotlib_parts():
  """matplotlib's ``Figure`` (pyplot-free: savefig renders PNG with Agg, no display) and ``ticker``, from
  the ``plots`` extra."""
  figure = optional.require("matplotlib.figure", "plots", feature="seqclf.benchmarks.compare's plots")
  return figure.Figure, optional.require("matplotlib.ticker", "plots")


def _save_png(figure, path: str) -> None:
  """Renders to memory, then writes atomically, so no reader sees half a PNG."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  write_atomically(path, lambda file: file.write(buffer.getvalue()))


def plot_epoch_time(rows: list[Row], labels: list[str], path: str) -> None:
  """Grouped bars: median seconds per epoch per row, one bar per device; log y beyond a 20x range."""
  Figure, _ = matplotlib_parts()
  width = 0.8 / len(labels)
  figure = Figure(figsize=(max(6.0, 2.5 + 0.45 * len(rows) * len(labels)), 4.5), layout="constrained")
  axes = figure.subplots()
  values = []
  for index, label in enumerate(labels):
    positions = [
      row_index + (index - (len(labels) - 1) / 2) * width
      for row_index, row in enumerate(rows)
      if row.runs.get(label)
    ]
    seconds = [median_epoch_s(row.runs[label]) for row in rows if row.runs.get(label)]
    bars = axes.bar(positions, seconds, width, label=label)
    axes.bar_label(bars, labels=[format_seconds(s) for s in seconds], fontsize=7, padding=1)
    values += seconds
  log = bool(values) and max(values) / min(values) > 20
  if log:
    axes.set_yscale("log")
  axes.set_xticks(range(len(rows)), [row.name for row in rows], rotation=20, ha="right")
  axes.set_xlabel("variant")
  axes.set_ylabel("seconds per epoch" + (" (log scale)" if log else ""))
  axes.set_title("Seconds per epoch (median over epochs and seeds; lower is better)")
  axes.margins(y=0.12)
  axes.legend(title="device", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  _save_png(figure, path)


_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_test_accuracy(rows: list[Row], labels: list[str], path: str) -> None:
  """Test accuracy per epoch (mean over seeds): colour per row, line style and marker per device."""
  Figure, ticker = matplotlib_parts()
  figure = Figure(figsize=(8.5, 4.5), layout="constrained")
  axes = figure.subplots()
  colors = [f"C{index % 10}" for index in range(len(rows))]
  for row, color in zip(rows, colors):
    for index, label in enumerate(labels):
      if row.runs.get(label):
        epochs, accuracies = accuracy_curve(row.runs[label])
        # Later devices get bigger, hollow markers, so equal curves (same seeds) stay visible.
        axes.plot(
          epochs,
          [100 * a for a in accuracies],
          color=color,
          linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
          marker=_MARKERS[index % len(_MARKERS)],
          markersize=5 + 3 * index,
          fillstyle="full" if index == 0 else "none",
          label=f"{row.name} · {label}",
        )
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlabel("epoch")
  axes.set_ylabel("test accuracy (%)")
  axes.set_title("Test accuracy per epoch (mean over seeds)")
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  _save_png(figure, path)


def plot_engine_sweep(sources: list[Source], path: str) -> None:
  """ms per forward+backward call against batch size (or T if B was not swept), one panel per H."""
  Figure, ticker = matplotlib_parts()
  entries = [(source.label, run) for source in sources for run in source.runs if run["mode"] == "fwd_bwd"]
  sweep_batch = len({run["batch"] for _, run in entries}) > 1
  x_key, other_key = ("batch", "steps") if sweep_batch else ("steps", "batch")
  several_sources = len(sources) > 1
  several_others = len({run[other_key] for _, run in entries}) > 1
  hidden_sizes = sorted({run["hidden"] for _, run in entries})
  figure = Figure(figsize=(4.2 * len(hidden_sizes) + 1.8, 4.2), layout="constrained")
  panels = figure.subplots(1, len(hidden_sizes), squeeze=False, sharey=True)[0]
  for axes, hidden in zip(panels, hidden_sizes):
    lines = {}
    for label, run in entries:
      if run["hidden"] == hidden:
        name = run["engine"] + (f" {other_key[0].upper()}={run[other_key]}" if several_others else "")
        name = f"{label}: {name}" if several_sources else name
        lines.setdefault(name, []).append((run[x_key], 1e3 * run["median_s"]))
    for index, (name, points) in enumerate(lines.items()):
      xs, ms = zip(*sorted(points))
      axes.plot(xs, ms, marker=_MARKERS[index % len(_MARKERS)], label=name)
    axes.set_xscale("log")
    axes.set_yscale("log")
    # Plain numbers (20, not 2x10^1): the swept sizes on x, log ticks on y.
    axes.xaxis.set_major_locator(ticker.FixedLocator(sorted({run[x_key] for _, run in entries})))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.yaxis.set_major_formatter(ticker.LogFormatter())
    axes.yaxis.set_minor_formatter(ticker.LogFormatter(minor_thresholds=(1.5, 0.6)))
    axes.set_title(f"H = {hidden}")
    axes.set_xlabel("batch size B" if sweep_batch else "sequence length T")
    axes.grid(alpha=0.3, which="both")
  panels[0].set_ylabel("ms per call (forward + backward)")
  panels[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  title = "LSTM engines: time per forward+backward call"
  if not several_sources:
    title += f" on {sources[0].label}"
  figure.suptitle(title)
  _save_png(figure, path)

r"""Puts benchmark results from several devices side by side: a markdown table and PNG plots.

  python -m benchmarks.compare runs/cpu runs/h200 --out=runs/compare
  python -m benchmarks.compare a/results.json b/results.json --out=runs/compare --baseline="cpu x4"

Each RESULT is a results file or a directory holding ``results.json`` (`benchmarks.article`) and/or
``lstm_engines.json`` (`benchmarks.lstm_engines`), directly or one level down. Every article results file
becomes one device column, named from its ``meta`` (e.g. "gpu x1 (NVIDIA H200)"). Writes to OUT:

* ``compare.md``: per variant, s/epoch (median over epochs and seeds), examples/s, final test accuracy
  (mean over seeds) per device, and the speed-up of each device over the baseline device; then the sources.
* ``epoch_time.png``, ``test_accuracy.png``, and ``engine_sweep.png`` when there are engine sweeps.

Article results are only merged when they were trained on the same data setup (`CONFIG_KEYS`); times on
different review lengths or batch sizes do not compare, so that needs ``--allow_config_mismatch``.
"""

import dataclasses
import io
import os
import re
import statistics

from absl import flags

from benchmarks import peers
from seqclf import cli, optional, results
from seqclf.atomic import write_atomically
from seqclf.errors import UsageError

_OUT = flags.DEFINE_string("out", None, "Directory for compare.md and the plots (required).")
_BASELINE = flags.DEFINE_string(
  "baseline",
  None,
  "Device column the speed-ups are relative to: its "
  "label or a unique start of it, e.g. 'cpu x1'. Default: the first.",
)
_ALLOW_CONFIG_MISMATCH = flags.DEFINE_bool(
  "allow_config_mismatch",
  False,
  "Merge article results even if their configs differ in maxlen, batch_size or top_words.",
)

RESULT_FILE_NAMES = ("results.json", "lstm_engines.json")
KINDS = ("article", "lstm_engines")
# Config keys that change how long an epoch takes or what is learned: runs that differ are not comparable.
CONFIG_KEYS = ("maxlen", "batch_size", "top_words")
# Also listed under the table: how long and how each source trained.
DESCRIBED_CONFIG_KEYS = (*CONFIG_KEYS, "epochs", "mask", "num_buckets", "device_resident")


@dataclasses.dataclass
class Source:
  """One results file and its device label (unique among the files of its kind)."""

  path: str
  results: dict
  label: str = ""

  @property
  def kind(self) -> str:
    return self.results["kind"]

  @property
  def meta(self) -> dict:
    return self.results.get("meta") or {}

  @property
  def runs(self) -> list[dict]:
    return self.results.get("runs") or []


# Loading.


def find_result_files(paths: list[str]) -> list[str]:
  """The results files named by ``paths``: files as given, directories searched one level deep."""
  found = []
  for path in paths:
    if os.path.isfile(path):
      found.append(path)
      continue
    if not os.path.isdir(path):
      raise UsageError(f"{path} does not exist; pass results.json files or benchmark workdirs")
    directories = [path] + sorted(
      os.path.join(path, name) for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))
    )
    in_path = [
      os.path.join(directory, name)
      for directory in directories
      for name in RESULT_FILE_NAMES
      if os.path.isfile(os.path.join(directory, name))
    ]
    if not in_path:
      raise UsageError(
        f"no {' or '.join(RESULT_FILE_NAMES)} in {path} or its subdirectories; pass a "
        "results file or a benchmark workdir"
      )
    found += in_path
  return list(dict.fromkeys(os.path.normpath(path) for path in found))


def load_sources(paths: list[str]) -> list[Source]:
  """Loads every results file (schema-checked) and gives each a unique device label within its kind."""
  sources = []
  for path in find_result_files(paths):
    loaded = results.load(path)
    if loaded.get("kind") not in KINDS:
      raise UsageError(
        f"{path} holds {loaded.get('kind')!r} results; compare reads {' and '.join(KINDS)} results"
      )
    sources.append(Source(path, loaded))
  for kind in KINDS:
    label_sources([source for source in sources if source.kind == kind])
  return sources


def _short_cpu_name(model: str) -> str:
  for noise in (r"\((R|TM|tm)\)", r"\bCPU\b", r"\bProcessor\b", r"\b\d+-Core\b", r"@ *[\d.]+ *GHz"):
    model = re.sub(noise, "", model)
  return " ".join(model.split())


def device_label(meta: dict) -> str:
  """e.g. "cpu x4 (AMD EPYC)", "gpu x1 (NVIDIA H200)", "tpu x8 (TPU v5 lite, 2 processes)"."""
  device = meta.get("device") or {}
  platform = device.get("platform", "unknown")
  model = _short_cpu_name(meta.get("cpu") or "") if platform == "cpu" else device.get("kind", "")
  details = [model] if model else []
  if device.get("process_count", 1) > 1:
    details.append(f"{device['process_count']} processes")
  label = f"{platform} x{device.get('count', '?')}"
  return f"{label} ({', '.join(details)})" if details else label


def label_sources(sources: list[Source]) -> None:
  """Sets each source's label to its device label; equal ones get their host added, or else a counter."""
  by_label = {}
  for source in sources:
    source.label = device_label(source.meta)
    by_label.setdefault(source.label, []).append(source)
  for same in by_label.values():
    if len(same) == 1:
      continue
    hosts = [source.meta.get("host") for source in same]
    for index, source in enumerate(same, 1):
      source.label += f" @{hosts[index - 1]}" if len(set(hosts)) == len(hosts) else f" #{index}"


def config_differences(sources: list[Source]) -> list[str]:
  """Each `CONFIG_KEYS` difference between article sources, as "KEY: VALUE in PATH, ..."."""
  differences = []
  for key in CONFIG_KEYS:
    values = {source.path: (source.meta.get("config") or {}).get(key) for source in sources}
    if len(set(map(repr, values.values()))) > 1:
      differences.append(f"{key}: " + ", ".join(f"{value!r} in {path}" for path, value in values.items()))
  return differences


def check_configs(sources: list[Source], allow_mismatch: bool) -> None:
  """Refuses article sources trained on different data setups, unless ``allow_mismatch``."""
  differences = config_differences(sources)
  if differences and not allow_mismatch:
    raise UsageError(
      f"the results differ in {differences[0]}; compare runs with the same config or pass "
      "--allow_config_mismatch"
    )


def choose_baseline(labels: list[str], spec: str | None) -> str:
  """The device label ``spec`` names (exactly or by a unique, case-insensitive start); default the first."""
  if not spec:
    return labels[0]
  if spec in labels:
    return spec
  matches = [label for label in labels if label.lower().startswith(spec.lower())]
  if len(matches) != 1:
    problem = "matches no" if not matches else "matches more than one"
    raise UsageError(f"--baseline={spec!r} {problem} device column; choose from: {'; '.join(labels)}")
  return matches[0]


# Grouping and the table.


@dataclasses.dataclass
class Row:
  """One table row: a variant (and engine, where one device ran several), its runs per device label."""

  variant: str
  engine: str | None  # None: seqclf's own engine, whichever each device used
  runs: dict[str, list[dict]]

  @property
  def name(self) -> str:
    return self.variant if self.engine is None else f"{self.variant} ({self.engine})"

  def engines(self) -> str:
    return ", ".join(dict.fromkeys(run["engine"] for runs in self.runs.values() for run in runs))


def group_rows(sources: list[Source]) -> list[Row]:
  """Rows of the article sources' runs, in first-seen order.

  seqclf picks its LSTM engine per device ("auto": fused on CPU, cudnn on GPU), so its runs of a variant
  share a row across devices; a peer framework (`benchmarks.peers`) gets a row of its own. Should a single
  file hold one variant under several seqclf engines, every engine gets its own row instead.
  """
  split_engines = any(
    len(
      {run["engine"] for run in source.runs if run["variant"] == variant and run["engine"] not in peers.PEERS}
    )
    > 1
    for source in sources
    for variant in {run["variant"] for run in source.runs}
  )
  rows = {}
  for source in sources:
    for run in source.runs:
      engine = run["engine"] if split_engines or run["engine"] in peers.PEERS else None
      row = rows.setdefault((run["variant"], engine), Row(run["variant"], engine, {}))
      row.runs.setdefault(source.label, []).append(run)
  return list(rows.values())


def median_epoch_s(runs: list[dict]) -> float:
  return statistics.median(epoch["epoch_s"] for run in runs for epoch in run["epochs"])


def median_examples_per_s(runs: list[dict]) -> float:
  return statistics.median(epoch["examples_per_s"] for run in runs for epoch in run["epochs"])


def final_test_accuracies(runs: list[dict]) -> list[float]:
  return [run["epochs"][-1]["test_acc"] for run in runs if run["epochs"]]


def accuracy_curve(runs: list[dict]) -> tuple[list[int], list[float]]:
  """Epochs and the mean test accuracy over the runs (seeds) that reached each."""
  by_epoch = {}
  for run in runs:
    for epoch in run["epochs"]:
      by_epoch.setdefault(epoch["epoch"], []).append(epoch["test_acc"])
  epochs = sorted(by_epoch)
  return epochs, [statistics.fmean(by_epoch[epoch]) for epoch in epochs]


def _format_seconds(seconds: float) -> str:
  return f"{seconds:,.0f}" if seconds >= 100 else f"{seconds:.3g}"


def _format_accuracy(accuracies: list[float]) -> str:
  text = f"{100 * statistics.fmean(accuracies):.2f} %"
  if len(accuracies) > 1:
    text += f" (±{100 * (max(accuracies) - min(accuracies)) / 2:.2f})"
  return text


def comparison_table(rows: list[Row], labels: list[str], baseline: str) -> str:
  """The markdown table: per-device s/epoch, examples/s and test accuracy, then speed-ups vs baseline."""
  others = [label for label in labels if label != baseline]
  header = (
    ["variant", "engine"]
    + [f"s/epoch {label}" for label in labels]
    + [f"examples/s {label}" for label in labels]
    + [f"test acc {label}" for label in labels]
    + [f"speed-up {label} vs {baseline}" for label in others]
  )
  table = []
  for row in rows:
    epoch_s = {label: median_epoch_s(runs) for label, runs in row.runs.items() if runs}
    cells = [row.variant, row.engines()]
    cells += [_format_seconds(epoch_s[label]) if label in epoch_s else "–" for label in labels]
    cells += [
      f"{median_examples_per_s(row.runs[label]):,.0f}" if label in epoch_s else "–" for label in labels
    ]
    cells += [
      _format_accuracy(final_test_accuracies(row.runs[label])) if label in epoch_s else "–"
      for label in labels
    ]
    cells += [
      f"{epoch_s[baseline] / epoch_s[label]:.2f}x" if baseline in epoch_s and label in epoch_s else "–"
      for label in others
    ]
    table.append(cells)
  return results.markdown_table(header, table)


def describe_source(source: Source) -> str:
  """One markdown list item: label, path, kind, date, host, commit, versions, the setup and the preset."""
  meta = source.meta
  git = meta.get("git") or {}
  commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
  versions = meta.get("versions") or {}
  parts = [
    f"{source.kind}, {len(source.runs)} runs",
    meta.get("date", "undated"),
    f"host {meta.get('host', '?')}",
    f"commit {commit}",
    f"jax {versions.get('jax', '?')}",
    f"{meta.get('cpu_count', '?')} CPUs",
  ]
  config = meta.get("config") or {}
  if source.kind == "article":
    parts.append(", ".join(f"{key} {config[key]}" for key in DESCRIBED_CONFIG_KEYS if key in config))
  preset = (meta.get("flags") or {}).get("preset")
  if preset and preset != "none":
    parts.append(f"preset {preset}")
  return f"- **{source.label}**: `{source.path}` — " + "; ".join(parts)


def comparison_markdown(sources: list[Source], baseline: str | None = None) -> str:
  """All of compare.md: the table (when there are article results), config warnings and the sources."""
  article = [source for source in sources if source.kind == "article"]
  parts = ["# Benchmark comparison\n\n"]
  if article:
    labels = [source.label for source in article]
    baseline = choose_baseline(labels, baseline)
    parts.append(
      "s/epoch and examples/s: medians over all epochs and seeds; test acc: last epoch, mean over "
      "seeds (± half their range); speed-up: the baseline's s/epoch over the device's.\n\n"
    )
    parts.append(comparison_table(group_rows(article), labels, baseline))
    parts += [
      f"\n**Configs differ** (merged with --allow_config_mismatch) in {difference}\n"
      for difference in config_differences(article)
    ]
  elif baseline:
    raise UsageError(
      "--baseline picks a device column of article results, and none were given; "
      "drop --baseline or add a results.json"
    )
  parts.append("\n## Sources\n")
  parts += [describe_source(source) + "\n" for source in sources]
  return "".join(parts)


# Plots.


def _matplotlib():
  """matplotlib's ``Figure`` (pyplot-free: savefig renders PNG with Agg, no display) and ``ticker``, from
  the ``plots`` extra."""
  figure = optional.require("matplotlib.figure", "plots", feature="benchmarks.compare's plots")
  return figure.Figure, optional.require("matplotlib.ticker", "plots")


def _save_png(figure, path: str) -> None:
  """Renders to memory, then writes atomically, so no reader sees half a PNG."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  write_atomically(path, lambda file: file.write(buffer.getvalue()))


def plot_epoch_time(rows: list[Row], labels: list[str], path: str) -> None:
  """Grouped bars: median seconds per epoch per row, one bar per device; log y beyond a 20x range."""
  Figure, _ = _matplotlib()
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
    axes.bar_label(bars, labels=[_format_seconds(s) for s in seconds], fontsize=7, padding=1)
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
  Figure, ticker = _matplotlib()
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
  Figure, ticker = _matplotlib()
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
        f"{source.path} has no fwd_bwd measurement to plot; re-run benchmarks.lstm_engines "
        "until it finishes a shape, or leave the file out"
      )
  if article or sweeps:
    _matplotlib()  # a missing extra fails before anything is written
  markdown = comparison_markdown(sources, baseline)
  written = [os.path.join(out, "compare.md")]
  results.write_text_atomic(written[0], markdown)
  if article:
    rows, labels = group_rows(article), [source.label for source in article]
    written.append(os.path.join(out, "epoch_time.png"))
    plot_epoch_time(rows, labels, written[-1])
    written.append(os.path.join(out, "test_accuracy.png"))
    plot_test_accuracy(rows, labels, written[-1])
  if sweeps:
    written.append(os.path.join(out, "engine_sweep.png"))
    plot_engine_sweep(sweeps, written[-1])
  return written


def main(argv):
  if len(argv) < 2:
    raise UsageError(
      "no results given; pass results.json files or benchmark workdirs, e.g. "
      "python -m benchmarks.compare runs/a runs/b --out=runs/compare"
    )
  if not _OUT.value:
    raise UsageError("--out is required: the directory for compare.md and the plots")
  written = write_comparison(
    argv[1:], _OUT.value, baseline=_BASELINE.value, allow_config_mismatch=_ALLOW_CONFIG_MISMATCH.value
  )
  with open(written[0]) as f:
    print(f.read())
  print("wrote " + ", ".join(written))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

"""The comparison's markdown: rows per variant (and engine), one column group per device, the sources."""

import dataclasses
import statistics

from seqclf import results
from seqclf.benchmarks import peers
from seqclf.benchmarks.compare.sources import DESCRIBED_CONFIG_KEYS, Source, config_differences
from seqclf.errors import UsageError


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

  seqclf picks its LSTM engine per device ("auto", `seqclf.rnn.engines.AUTO`: cpu_kernel or else fused on
  CPU, pallas on GPU, fused on TPU), so its runs of a variant
  share a row across devices; a peer framework (`seqclf.benchmarks.peers`) gets a row of its own. Should a single
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


def format_seconds(seconds: float) -> str:
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
    cells += [format_seconds(epoch_s[label]) if label in epoch_s else "–" for label in labels]
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

"""The article driver's report: the table's rows over seeds and the run-level progress line.

Apart from `seqclf/benchmarks/article.py` because that module defines absl flags when imported, and one process
cannot import two drivers whose flags share names (--workdir, --steps, ...): this module has none, so
tests and other tools can import it anywhere.
"""

import statistics
import time

from seqclf import models


def accuracy_spread(accs: list[float]) -> tuple[float, float | None]:
  """(mean, sample standard deviation) of final test accuracies; no spread for a single seed."""
  return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else None


def summary_rows(runs: list[dict]) -> list[list]:
  """One row per (variant, engine): median s/epoch, mean final test accuracy ± its spread over seeds.

  The spread is the sample standard deviation over the seeds; "article in spread" says whether the
  article's figure lies within mean ± that. Every row after a variant's first (another engine, or a peer)
  also gives its speed relative to that first row, the baseline (`table_header` names it): the baseline's
  s/epoch over the row's, so 2.00x is twice as fast as the baseline and 0.50x half as fast.
  """
  rows, first_engine_s = [], {}
  for variant, engine in dict.fromkeys((run["variant"], run["engine"]) for run in runs):
    mine = [run for run in runs if (run["variant"], run["engine"]) == (variant, engine)]
    median_s = statistics.median(e["epoch_s"] for run in mine for e in run["epochs"])
    mean, spread = accuracy_spread([run["epochs"][-1]["test_acc"] for run in mine])
    compile_s = statistics.mean(run["compile_s"] for run in mine)
    if variant in first_engine_s:
      speedup = f"{first_engine_s[variant] / median_s:.2f}x"
    else:
      first_engine_s[variant] = median_s
      speedup = "–"
    article_s, article_acc = models.ARTICLE_RESULTS.get(variant, (None, None))
    if spread is None or article_acc is None:
      within = "–"
    else:
      within = "yes" if abs(article_acc - mean) <= spread else "no"
    rows.append(
      [
        variant,
        engine,
        f"{median_s:.2f}",
        f"{compile_s:.2f}",
        f"{100 * mean:.2f} ± {100 * spread:.2f} %" if spread is not None else f"{100 * mean:.2f} %",
        len(mine),
        f"{100 * article_acc:.2f} %" if article_acc else "–",
        within,
        speedup,
        article_s if article_s else "–",
      ]
    )
  return rows


def table_header(runs: list[dict]) -> list[str]:
  """The header of `summary_rows`' table; the speed-up column names its baseline, the first engine run."""
  baseline = runs[0]["engine"] if runs else "the first engine"
  return [*TABLE_HEADER[:8], f"speed-up vs {baseline}", *TABLE_HEADER[9:]]


TABLE_HEADER = [
  "variant",
  "engine",
  "s/epoch",
  "compile s",
  "test acc (mean ± sd)",
  "seeds",
  "article acc",
  "article in spread",
  "speed-up vs the first engine",
  "article s/epoch",
]


class RunProgress:
  """Where a whole invocation stands: which run of how many, and the time left, estimated per epoch.

  The estimate is the wall time so far (data, compilation and training) over the epochs finished, times
  the epochs still to train; printed lines go to stdout, so they land in a log file as on a terminal.
  """

  def __init__(self, total_runs: int, epochs_per_run: int):
    self.total_runs, self.epochs_per_run = total_runs, epochs_per_run
    self.run, self.epochs_done = 0, 0
    self.start = time.perf_counter()

  def start_run(self, description: str) -> None:
    self.run += 1
    left = f", about {duration(self._seconds_left())} left" if self.epochs_done else ""
    print(f"[run {self.run}/{self.total_runs}] {description}{left}", flush=True)

  def epoch_done(self) -> str:
    """Counts a finished epoch; returns ``run i/N, ~T left`` for the epoch's line."""
    self.epochs_done += 1
    return f"run {self.run}/{self.total_runs}, {duration(self._seconds_left())} left"

  def _seconds_left(self) -> float:
    elapsed = time.perf_counter() - self.start
    return elapsed / self.epochs_done * (self.total_runs * self.epochs_per_run - self.epochs_done)


def duration(seconds: float) -> str:
  minutes, seconds = divmod(round(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

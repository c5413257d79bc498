"""The article driver's report: the table's rows over seeds and the run-level progress line.

Apart from `seqclf/benchmarks/article.py` because that module defines absl flags when imported, and one process
cannot import two drivers whose flags share names (--workdir, --steps, ...): this module has none, so
tests and other tools can import it anywhere.
"""

import math
import statistics
import time

from seqclf import models, results

# A run whose final test accuracy is below this collapsed (the article's LSTM ends near 0.87).
COLLAPSE_BELOW = 0.80
COLLAPSE_MARK = "✗"


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
  """The Wilson score interval of a binomial proportion (95 % for z = 1.96); unlike p ± z se it stays
  inside [0, 1] and is not empty for 0 or n successes, which is what a handful of seeds gives."""
  p = successes / trials
  centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
  half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
  return max(0.0, centre - half), min(1.0, centre + half)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
  """A distribution-free interval for the median: order statistics x_(j), x_(n+1-j) with the largest j
  such that P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2, so it covers the median with at least that
  probability (97.9 % for 10 values: x_(2), x_(9)). None when n is too small (n < 6 for 95 %)."""
  n, ordered = len(values), sorted(values)
  tail, j = 0.0, 0
  while j < n and tail + math.comb(n, j) / 2**n <= (1 - confidence) / 2:
    tail += math.comb(n, j) / 2**n
    j += 1
  return (ordered[j - 1], ordered[n - j]) if j >= 1 else None


def seed_values(runs: list[dict]) -> str:
  """``seed: final test acc`` of each run, a collapsed one marked: ``0: 87.44, 1: 75.34 ✗``."""
  cells = []
  for run in sorted(runs, key=lambda run: run["seed"]):
    acc = run["epochs"][-1]["test_acc"]
    cells.append(f"{run['seed']}: {100 * acc:.2f}" + (f" {COLLAPSE_MARK}" if acc < COLLAPSE_BELOW else ""))
  return ", ".join(cells)


def distribution_cells(accs: list[float]) -> list[str]:
  """The final test accuracies over seeds as the table's distribution columns: the mean's standard error,
  the median with its 95 % interval, and the collapse rate with its 95 % Wilson interval."""
  n = len(accs)
  se = f"{100 * statistics.stdev(accs) / math.sqrt(n):.2f}" if n > 1 else "–"
  median = f"{100 * statistics.median(accs):.2f} %"
  interval = median_interval(accs)
  if interval:
    median += f" ({100 * interval[0]:.2f}–{100 * interval[1]:.2f})"
  collapsed = sum(acc < COLLAPSE_BELOW for acc in accs)
  low, high = wilson_interval(collapsed, n)
  rate = f"{collapsed}/{n} ({100 * low:.0f}–{100 * high:.0f} %)"
  return [se, median, rate]


def accuracy_spread(accs: list[float]) -> tuple[float, float | None]:
  """(mean, sample standard deviation) of final test accuracies; no spread for a single seed."""
  return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else None


def summary_rows(runs: list[dict]) -> list[list]:
  """One row per (variant, engine): median s/epoch, mean final test accuracy ± its spread over seeds.

  The spread is the sample standard deviation over the seeds; "article in spread" says whether the
  article's figure lies within mean ± that. Every row after a variant's first (another engine, or a peer)
  also gives its speed relative to that first row, the baseline (`table_header` names it): the baseline's
  s/epoch over the row's, so 2.00x is twice as fast as the baseline and 0.50x half as fast.
  Then the distribution over the seeds (`distribution_cells`): the mean's standard error, the median,
  how many runs collapsed (final test accuracy under `COLLAPSE_BELOW`), and each seed's final accuracy, a
  collapsed one marked.
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
        *distribution_cells([run["epochs"][-1]["test_acc"] for run in mine]),
        seed_values(mine),
      ]
    )
  return rows


def table_header(runs: list[dict]) -> list[str]:
  """The header of `summary_rows`' table; the speed-up column names its baseline, the first engine run."""
  baseline = runs[0]["engine"] if runs else "the first engine"
  return [*TABLE_HEADER[:8], f"speed-up vs {baseline}", *TABLE_HEADER[9:]]


def seed_rows(runs: list[dict]) -> list[list]:
  """One row per run: its test accuracy after each epoch, the final one, and whether it collapsed."""
  return [
    [
      run["variant"],
      run["engine"],
      run["seed"],
      " / ".join(f"{100 * e['test_acc']:.2f}" for e in run["epochs"]),
      f"{100 * run['epochs'][-1]['test_acc']:.2f} %",
      COLLAPSE_MARK if run["epochs"][-1]["test_acc"] < COLLAPSE_BELOW else "",
    ]
    for run in runs
  ]


SEED_TABLE_HEADER = ["variant", "engine", "seed", "test acc per epoch (%)", "final test acc", "collapsed"]


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
  "mean's se",
  "median (95 % CI)",
  f"collapsed (< {100 * COLLAPSE_BELOW:.0f} %, 95 % CI)",
  f"per seed ({COLLAPSE_MARK}: collapsed)",
]


def skipped_rows(skipped: list[dict]) -> list[list]:
  """One summary row per (variant, engine) pair a sweep left out, saying why, the other cells empty."""
  return [
    [pair["variant"], pair["engine"], f"skipped: {pair['reason']}", *["–"] * (len(TABLE_HEADER) - 3)]
    for pair in skipped
  ]


def markdown(runs: list[dict], skipped: list[dict] = ()) -> str:
  """results.md and the printed report: the summary table (with a row for each pair in ``skipped``,
  ``{"variant", "engine", "reason"}``) over the per-run table."""
  return (
    results.markdown_table(table_header(runs), summary_rows(runs) + skipped_rows(skipped))
    + "\n"
    + results.markdown_table(SEED_TABLE_HEADER, seed_rows(runs))
  )


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

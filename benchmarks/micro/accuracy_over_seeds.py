"""Final test accuracy per seed of groups of article runs: mean ± sample sd, median, and each group's
per-seed differences to the first group.

  python benchmarks/micro/accuracy_over_seeds.py \
      float32=benchmarks/results/2026-12-01_cpu-xeon-2core_accuracy-over-seeds/float32_seeds* \
      bfloat16=benchmarks/results/2026-12-01_cpu-xeon-2core_accuracy-over-seeds/bfloat16_seeds0-9

Each argument is NAME=DIR[,DIR...]; a DIR may be a glob pattern, and every DIR it names holds a
``results.json`` of `seqclf.benchmarks.article`.
"""

import argparse
import glob
import json
import pathlib
import statistics


def final_accuracy(run_dirs: list[str]) -> dict[int, float]:
  """{seed: test accuracy (%) after the last epoch} over the runs in ``run_dirs``."""
  accuracy = {}
  for run_dir in run_dirs:
    for run in json.loads((pathlib.Path(run_dir) / "results.json").read_text())["runs"]:
      accuracy[run["seed"]] = 100 * run["epochs"][-1]["test_acc"]
  return accuracy


def groups_from(arguments: list[str]) -> dict[str, list[str]]:
  """``["a=x*,y", "b=z"]`` -> ``{"a": [x1, x2, y], "b": [z]}`` (patterns expanded, sorted)."""
  groups = {}
  for argument in arguments:
    name, _, dirs = argument.partition("=")
    if not dirs:
      raise SystemExit(f"error: {argument} is not NAME=DIR[,DIR...]")
    groups[name] = [match for pattern in dirs.split(",") for match in sorted(glob.glob(pattern)) or [pattern]]
  return groups


def table(groups: dict[str, list[str]]) -> str:
  accuracies = {name: final_accuracy(dirs) for name, dirs in groups.items()}
  reference = next(iter(accuracies.values()))
  lines = [
    "| run | seeds | per seed | mean ± sd | median | mean of per-seed differences to the first |",
    "|---|---|---|---|---|---|",
  ]
  for name, accuracy in accuracies.items():
    seeds = sorted(accuracy)
    values = [accuracy[s] for s in seeds]
    differences = [accuracy[s] - reference[s] for s in seeds if s in reference]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    lines.append(
      f"| {name} | {seeds[0]}-{seeds[-1]} | {' / '.join(f'{v:.2f}' for v in values)} | "
      f"{statistics.mean(values):.2f} ± {spread:.2f} % | {statistics.median(values):.2f} % | "
      f"{statistics.mean(differences):+.2f} (median {statistics.median(differences):+.2f}) |"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("groups", nargs="+", help="NAME=DIR[,DIR...]")
  print(table(groups_from(parser.parse_args().groups)))

"""Final test accuracy of the article LSTM (3 epochs) per seed, float32 against bfloat16, from the
results.json files of the runs named below: mean +- sample sd, median, and the per-seed differences.

  python benchmarks/results/cpu_2core_session5/accuracy_over_seeds.py
"""

import json
import pathlib
import statistics

RESULTS = pathlib.Path(__file__).resolve().parents[1]
GROUPS = {
  "float32": [
    "cpu_2core_session4/fixed_3seeds",
    "cpu_2core_session4/fixed_seeds34",
    "cpu_2core_session5/fixed_seeds5to9",
  ],
  "bfloat16, all three products (session 5)": ["cpu_2core_session5/bfloat16_dw_10seeds"],
  "bfloat16, float32 weight gradient (session 4 kernel)": [
    "cpu_2core_session4/bfloat16_amx_3seeds",
    "cpu_2core_session5/bfloat16_seeds3to9",
  ],
}


def final_accuracy(run_dirs):
  """{seed: test accuracy (%) after the last epoch} over the runs in ``run_dirs``."""
  accuracy = {}
  for run_dir in run_dirs:
    for run in json.loads((RESULTS / run_dir / "results.json").read_text())["runs"]:
      accuracy[run["seed"]] = 100 * run["epochs"][-1]["test_acc"]
  return accuracy


groups = {name: final_accuracy(dirs) for name, dirs in GROUPS.items()}
reference = groups["float32"]
print("| run | seeds | per seed | mean ± sd | median | mean of per-seed differences to float32 |")
print("|---|---|---|---|---|---|")
for name, accuracy in groups.items():
  seeds = sorted(accuracy)
  values = [accuracy[s] for s in seeds]
  differences = [accuracy[s] - reference[s] for s in seeds if s in reference]
  print(
    f"| {name} | {seeds[0]}-{seeds[-1]} | {' / '.join(f'{v:.2f}' for v in values)} | "
    f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} % | {statistics.median(values):.2f} % | "
    f"{statistics.mean(differences):+.2f} (median {statistics.median(differences):+.2f}) |"
  )

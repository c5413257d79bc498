"""Writes this directory's results.md from the results.json files: one row per framework over its seeds.

  python benchmarks/results/2026-12-06_cpu-2core_lstm-seeds/make_table.py   # from the repository root
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, ROOT)

from benchmarks import article_report  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
FILES = {  # row label -> results.json files, relative to benchmarks/results
  "seqclf cpu_kernel float32": [
    "cpu_2core_session4/fixed_3seeds/results.json",
    "cpu_2core_session4/fixed_seeds34/results.json",
    "cpu_2core_session5/fixed_seeds5to9/results.json",
  ],
  "seqclf cpu_kernel float32, re-run": ["2026-12-06_cpu-2core_lstm-seeds/seqclf_float32_seeds01/results.json"],
  "Keras 3 LSTM (JAX)": ["2026-12-06_cpu-2core_lstm-seeds/keras/results.json"],
  "seqclf fused, article_faithful.py": ["2026-12-06_cpu-2core_lstm-seeds/faithful/results.json"],
}


def main():
  runs = []
  for label, paths in FILES.items():
    for path in paths:
      with open(os.path.join(RESULTS, path)) as f:
        runs += [{**run, "engine": label} for run in json.load(f)["runs"]]
  with open(os.path.join(HERE, "results.md"), "w") as f:
    f.write(article_report.markdown(runs))


if __name__ == "__main__":
  main()

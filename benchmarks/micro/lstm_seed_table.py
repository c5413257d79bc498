"""Writes benchmarks/results/2026-12-08_cpu-xeon-2core_lstm-seeds/results.md from the published results.json
files of the article LSTM over seeds: one row per framework or setting (`article_report.markdown`).

  python benchmarks/micro/lstm_seed_table.py   # from the repository root
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from seqclf.benchmarks import article_report  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
OUT = os.path.join(RESULTS, "2026-12-08_cpu-xeon-2core_lstm-seeds", "results.md")
FILES = {  # row label -> results.json files, relative to benchmarks/results
  "seqclf cpu_kernel float32": [
    "2026-12-08_cpu-xeon-2core_article-3seeds/lstm/results.json",
    "2026-12-08_cpu-xeon-2core_lstm-seeds/seqclf_seeds3-5/results.json",
    "2026-12-08_cpu-xeon-2core_lstm-seeds/seqclf_seeds6-9/results.json",
  ],
  "PyTorch nn.LSTM": ["2026-12-06_cpu-2core_lstm-seeds/torch/results.json"],
  "Keras 3 LSTM (JAX)": [
    "2026-12-06_cpu-2core_lstm-seeds/keras/results.json",
    "2026-12-06_cpu-2core_lstm-seeds/keras_seeds5-9/results.json",
  ],
  "seqclf fused, article_faithful.py": ["2026-12-06_cpu-2core_lstm-seeds/faithful/results.json"],
}


def main():
  runs = []
  for label, paths in FILES.items():
    for path in paths:
      with open(os.path.join(RESULTS, path)) as f:
        runs += [{**run, "engine": label} for run in json.load(f)["runs"] if run["variant"] == "lstm"]
  with open(OUT, "w") as f:
    f.write(article_report.markdown(runs))


if __name__ == "__main__":
  main()

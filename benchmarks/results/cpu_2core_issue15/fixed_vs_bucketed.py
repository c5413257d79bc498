"""Fixed vs bucketed epochs of the article LSTM in one process, rounds alternating.

python benchmarks/results/cpu_2core_issue15/fixed_vs_bucketed.py N_TRAIN EPOCHS [ENGINE] [ROUNDS]
(N_TRAIN = 25000: all of train and test; fewer: a random subset and 2000 test reviews)."""
# ruff: noqa: E402  (the heap preset must be applied before JAX is imported)

import dataclasses
import pathlib
import resource
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository
from seqclf import presets

presets.apply("cpu_heap")
import numpy as np

from configs import default
from seqclf import models, train
from seqclf.data.cache import load_encoded

n = int(sys.argv[1])
epochs = int(sys.argv[2])
engine = sys.argv[3] if len(sys.argv) > 3 else "cpu_kernel"
data = load_encoded("/work/shared/data/aclImdb_labeled.tar.gz", top_words=5000, maxlen=500)
rng = np.random.default_rng(0)
idx = rng.permutation(len(data.x_train))[:n]
tidx = np.arange(len(data.x_test)) if n >= len(data.x_train) else rng.permutation(len(data.x_test))[:2000]
sub = dataclasses.replace(
  data,
  x_train=data.x_train[idx],
  y_train=data.y_train[idx],
  x_test=data.x_test[tidx],
  y_test=data.y_test[tidx],
)
for _round in range(int(sys.argv[4]) if len(sys.argv) > 4 else 1):
  for buckets in (0, 6):
    config = default.get_config()
    config.num_buckets = buckets
    config.epochs = epochs
    model = models.create("lstm", vocab_size=5000, **{**config.model, "engine": engine})
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rec, _ = train.fit(model, sub, config, seed=0, label=f"b{buckets}")
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(
      f"buckets={buckets} compile={rec['compile_s']:.1f} epochs_s="
      + ",".join(f"{e['epoch_s']:.2f}" for e in rec["epochs"])
      + " acc="
      + ",".join(f"{e['test_acc']:.4f}" for e in rec["epochs"])
      + f" minflt={f1 - f0}",
      flush=True,
    )

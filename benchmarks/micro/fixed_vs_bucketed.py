"""Fixed-length against bucketed epochs of the article LSTM in one process, rounds alternating.

  python benchmarks/micro/fixed_vs_bucketed.py --imdb=$SEQCLF_IMDB --train_examples=25000 --rounds=2

With fewer than all 25000 training reviews it trains on a random subset and evaluates 2000 test reviews.
Prints per round and setting the compile time, each epoch's seconds and test accuracy, and the minor page
faults (the ``cpu_heap`` preset keeps them near zero after the first round).
"""

import argparse
import dataclasses
import os
import resource

from seqclf import presets

presets.apply("cpu_heap")  # before JAX starts its backend, as the drivers' default preset on a CPU

import numpy as np  # noqa: E402

from seqclf import models, train  # noqa: E402
from seqclf.configs import default  # noqa: E402
from seqclf.data.cache import load_encoded  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--imdb", default=os.environ.get("SEQCLF_IMDB"), help="aclImdb archive (default $SEQCLF_IMDB)"
  )
  parser.add_argument("--train_examples", type=int, default=25000)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--engine", default="cpu_kernel")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--buckets", type=int, default=6)
  parser.add_argument("--maxlen", type=int, default=500)
  args = parser.parse_args()
  if not args.imdb:
    parser.error("no IMDB archive: pass --imdb=PATH or set SEQCLF_IMDB")
  data = load_encoded(args.imdb, top_words=5000, maxlen=args.maxlen)
  rng = np.random.default_rng(0)
  train_index = rng.permutation(len(data.x_train))[: args.train_examples]
  everything = args.train_examples >= len(data.x_train)
  test_index = np.arange(len(data.x_test)) if everything else rng.permutation(len(data.x_test))[:2000]
  subset = dataclasses.replace(
    data,
    x_train=data.x_train[train_index],
    y_train=data.y_train[train_index],
    x_test=data.x_test[test_index],
    y_test=data.y_test[test_index],
  )
  for _ in range(args.rounds):
    for buckets in (0, args.buckets):
      config = default.get_config()
      config.num_buckets, config.epochs, config.maxlen = buckets, args.epochs, args.maxlen
      model = models.create("lstm", vocab_size=5000, **{**config.model, "engine": args.engine})
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      record, _ = train.fit(model, subset, config, seed=0, label=f"buckets={buckets}")
      faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
      print(
        f"buckets={buckets} compile={record['compile_s']:.1f} epochs_s="
        + ",".join(f"{e['epoch_s']:.2f}" for e in record["epochs"])
        + " acc="
        + ",".join(f"{e['test_acc']:.4f}" for e in record["epochs"])
        + f" minflt={faults}",
        flush=True,
      )


if __name__ == "__main__":
  main()

"""Trains the synthetic task in a process of its own and prints the result as JSON (for test_parallel).

  python -m tests.parallel_worker [--process_id=I --num_processes=N --coordinator=HOST:PORT] [--resident]

The device count comes from XLA_FLAGS (--xla_force_host_platform_device_count), set by the caller.
"""

import argparse
import json

import jax
import numpy as np

from seqclf import models, parallel, train
from tests import synthetic


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--coordinator", default="")
  parser.add_argument("--resident", action="store_true")
  args = parser.parse_args()
  parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  config = synthetic.config(epochs=2)
  config.device_resident = args.resident
  data = synthetic.signal_task(n_train=256, n_test=128)
  model = models.create("lstm_dropout", vocab_size=config.top_words, **config.model)
  record, state = train.fit(model, data, config, seed=0)
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)).tolist(), state.params)
  print(
    json.dumps(
      {
        "devices": jax.device_count(),
        "process_count": jax.process_count(),
        "epochs": record["epochs"],
        "params": params,
      }
    )
  )


if __name__ == "__main__":
  main()

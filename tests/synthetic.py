"""A small separable sequence task that every variant must learn (shared by the model/train tests)."""

import dataclasses

import numpy as np

from seqclf.configs import tiny


@dataclasses.dataclass(frozen=True)
class ArrayData:
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def signal_task(n_train=384, n_test=256, steps=16, vocab=40, seed=0) -> ArrayData:
  """Label 1 iff one of the 'signal' ids 3..5 occurs somewhere in the (front-padded) sequence."""
  rng = np.random.default_rng(seed)

  def make(n):
    lengths = rng.integers(4, steps + 1, n)
    x = np.zeros((n, steps), np.int32)
    y = rng.integers(0, 2, n).astype(np.int32)
    for row, (length, label) in enumerate(zip(lengths, y)):
      tokens = rng.integers(6, vocab, length)
      if label:
        tokens[rng.integers(0, length)] = rng.integers(3, 6)
      x[row, steps - length :] = tokens
    return x, y

  return ArrayData(*make(n_train), *make(n_test))


def config(epochs=12):
  config = tiny.get_config()
  config.top_words = 40
  config.maxlen = 16
  config.batch_size = 32
  config.eval_batch_size = 64
  config.epochs = epochs
  config.learning_rate = 1e-2
  config.model.lstm_features = 16
  return config

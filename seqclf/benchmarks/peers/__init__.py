"""Peer frameworks training the article's variants the way `seqclf.train.fit` does: PyTorch and Keras 3.

  record = fit_peer("torch", "lstm", data, config, seed=0)
  runs.append({"variant": "lstm", "engine": "torch", **record})   # a row of seqclf/benchmarks/article.py

What is the same as `seqclf.train.fit`, so the rows compare: the encoded arrays (``data.x_train`` ...), the
fixed-length batches and their order (`seqclf.data.batching.batches`, ``epoch_order``), the variants'
`seqclf.models.VARIANTS` fields and sizes (``config.top_words``, ``config.model.embed_dim`` and
``lstm_features``), Keras' default initialisation, Adam (``config.learning_rate``, ``config.adam_eps``),
binary cross-entropy on one logit, and the returned record. Evaluation is computed here, in NumPy, from
the peer's logits. The peers train the article's setup: seqclf's feeding options (``config.mask``,
``num_buckets``, ``device_resident``) are not theirs, and the record's ``shapes`` says so.

Timing: before the first epoch one warm-up training step (on a batch whose weights are all 0, so it
changes no parameter) and one prediction run apart and are reported as ``compile_s``: Keras compiles
there, PyTorch allocates and picks kernels. Every ``epoch_s`` then covers a whole epoch of steady-state
training, its clock stopped only after the peer's work is done.

The frameworks are an optional extra (``pip install -e .[peers]``); this module imports them only when a
peer is used.
"""

import dataclasses
import importlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from seqclf import models, train
from seqclf.data import batching
from seqclf.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Peer:
  module: str  # defines create_trainer(variant, config, *, seed) -> PeerTrainer
  requires: str  # the framework's top-level package
  # Environment the framework reads once, at its first import; set by `load_peer`, never at import.
  environ: tuple[tuple[str, str], ...] = ()


PEERS = {
  "torch": Peer("seqclf.benchmarks.peers.torch_models", "torch"),
  "keras": Peer("seqclf.benchmarks.peers.keras_models", "keras", environ=(("KERAS_BACKEND", "jax"),)),
}

INSTALL_HINT = "pip install -e .[peers]"


class PeerTrainer(Protocol):
  """One model of one framework with its optimizer; what `fit_loop` drives."""

  param_count: int  # trainable parameters, as Keras counts them

  def warm_up(self, batch: dict, eval_tokens: np.ndarray) -> None:
    """One training step on ``batch`` (all weights 0) and one prediction; leaves the model as it was."""

  def train_epoch(self, batches: Iterator[dict]) -> tuple[float, float]:
    """Trains on every batch; returns (loss, accuracy) over the weighted examples, once all work is done."""

  def predict(self, tokens: np.ndarray) -> np.ndarray:
    """Logits [B] in inference mode (no dropout)."""


def parse_peers(spec: str) -> list[str]:
  """``"torch,keras"`` -> validated names (empty for an empty spec)."""
  names = [name.strip() for name in spec.split(",") if name.strip()]
  for name in names:
    if name not in PEERS:
      raise ConfigError(f"unknown peer {name!r}; choose from: {', '.join(PEERS)}")
  return names


def load_peer(name: str):
  """The peer's module, or a `ConfigError` with the install hint when its framework is missing."""
  if name not in PEERS:
    raise ConfigError(f"unknown peer {name!r}; choose from: {', '.join(PEERS)}")
  peer = PEERS[name]
  for key, value in peer.environ:
    os.environ.setdefault(key, value)
  try:
    return importlib.import_module(peer.module)
  except ModuleNotFoundError as e:
    if e.name and e.name.split(".")[0] == peer.requires:
      raise ConfigError(f"peer {name!r} needs {peer.requires}, which is not installed; {INSTALL_HINT}") from e
    raise


def binary_metrics(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """[weighted loss sum, weighted correct count, weight sum] for one logit per example.

  The loss is sigmoid cross-entropy in its stable form, as optax computes it for `seqclf.train`.
  """
  logits = logits.astype(np.float64)
  losses = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
  correct = (logits > 0) == (labels == 1)
  return np.array([(losses * weights).sum(), (correct * weights).sum(), weights.sum()])


def evaluate(
  predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float]:
  """(loss, accuracy) of ``predict`` on (x, y) in fixed-shape batches; padding rows count for nothing."""
  total = np.zeros(3)
  for batch in batching.batches(x, y, batch_size):
    total += binary_metrics(predict(batch["tokens"]), batch["labels"], batch["weights"])
  count = max(total[2], 1.0)
  return total[0] / count, total[1] / count


def fit_loop(trainer: PeerTrainer, data, config, *, seed: int, on_epoch=None) -> dict:
  """Trains ``trainer`` on ``data`` for ``config.epochs``; returns a `seqclf.train.fit`-style record."""
  first_batch = next(batching.batches(data.x_train, data.y_train, config.batch_size))
  eval_tokens = next(batching.batches(data.x_test, data.y_test, config.eval_batch_size))["tokens"]
  start = time.perf_counter()
  trainer.warm_up({**first_batch, "weights": np.zeros_like(first_batch["weights"])}, eval_tokens)
  compile_s = time.perf_counter() - start

  epochs = []
  for epoch in range(1, config.epochs + 1):
    order = batching.epoch_order(seed, epoch, len(data.x_train))
    start = time.perf_counter()
    train_loss, train_acc = trainer.train_epoch(
      batching.batches(data.x_train, data.y_train, config.batch_size, order)
    )
    epoch_s = time.perf_counter() - start
    eval_start = time.perf_counter()
    test_loss, test_acc = evaluate(trainer.predict, data.x_test, data.y_test, config.eval_batch_size)
    metrics = train.EpochMetrics(
      epoch=epoch,
      epoch_s=epoch_s,
      examples_per_s=len(data.x_train) / epoch_s,
      train_loss=float(train_loss),
      train_acc=float(train_acc),
      test_loss=float(test_loss),
      test_acc=float(test_acc),
      eval_s=time.perf_counter() - eval_start,
    )
    epochs.append(dataclasses.asdict(metrics))
    if on_epoch:
      on_epoch(metrics)
  return {
    "seed": seed,
    "param_count": int(trainer.param_count),
    "compile_s": compile_s,
    "shapes": [data.x_train.shape[1]],
    "devices": 1,
    "epochs": epochs,
  }


def fit_peer(name: str, variant: str, data, config, *, seed: int, on_epoch=None) -> dict:
  """Trains ``variant`` with peer framework ``name`` as `seqclf.train.fit` would train it with seqclf.

  Args:
    name: a key of `PEERS`.
    variant: a key of `seqclf.models.VARIANTS`.
    data: has int32 arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (an `EncodedDataset`).
    config: the article config (``seqclf/configs/default.py``).
    seed: seeds the framework's initialisation and dropout, and picks the batch order.
    on_epoch: called with each epoch's `seqclf.train.EpochMetrics`.

  Returns:
    ``{"seed", "param_count", "compile_s", "shapes", "devices", "epochs"}`` like `seqclf.train.fit`'s
    record (one device; ``shapes`` is ``[maxlen]``).

  Raises:
    ConfigError: unknown peer or variant, a bad config, or the framework is not installed.
  """
  train.validate(config)
  if variant not in models.VARIANTS:
    raise ConfigError(f"unknown variant {variant!r}; choose from: {', '.join(models.VARIANTS)}")
  trainer = load_peer(name).create_trainer(variant, config, seed=seed)
  return fit_loop(trainer, data, config, seed=seed, on_epoch=on_epoch)

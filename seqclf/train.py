"""Training: train state, jitted train/eval steps, the epoch loop, timing and metrics.

Timing rules (the only place they live): steps are compiled ahead of time (``jit(...).lower().compile()``)
and that time is reported apart as ``compile_s``; an epoch's clock stops only after
``block_until_ready()`` on the final state, so ``epoch_s`` is steady-state device time plus host work of
that epoch, never compilation. Evaluation is timed apart (``eval_s``).
"""

import dataclasses
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seqclf.errors import ConfigError


class TrainState(train_state.TrainState):
  pass


@dataclasses.dataclass
class EpochMetrics:
  epoch: int
  epoch_s: float
  examples_per_s: float
  train_loss: float
  train_acc: float
  test_loss: float
  test_acc: float
  eval_s: float


def validate(config) -> None:
  """Rejects sizes that cannot work, with the flag to fix."""
  for key in ("batch_size", "eval_batch_size", "epochs", "top_words", "maxlen"):
    value = config[key]
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"--config.{key} must be a positive integer, got {value!r}")
  if not 0 < config.learning_rate < 10:
    raise ConfigError(f"--config.learning_rate must be in (0, 10), got {config.learning_rate}")


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam as Keras configures it (eps 1e-7), optionally after global-norm clipping."""
  adam = optax.adam(config.learning_rate, eps=config.adam_eps)
  if config.get("grad_clip_norm"):
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)
  return adam


def loss_and_metrics(logits, labels, weights):
  """Weighted mean loss and summed metrics; rows with weight 0 (batch padding) count for nothing."""
  if logits.ndim == 1:  # binary: one logit, sigmoid
    losses = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
    predictions = (logits > 0).astype(labels.dtype)
  else:
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    predictions = jnp.argmax(logits, axis=-1).astype(labels.dtype)
  count = weights.sum()
  loss = (losses * weights).sum() / jnp.maximum(count, 1.0)
  metrics = {"loss_sum": (losses * weights).sum(), "correct": ((predictions == labels) * weights).sum(),
             "count": count}
  return loss, metrics


def make_train_step(model) -> Callable:
  def train_step(state, batch, dropout_key):
    dropout_key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
      logits = model.apply({"params": params}, batch["tokens"], batch.get("mask"), train=True,
                           rngs={"dropout": dropout_key})
      return loss_and_metrics(logits, batch["labels"], batch["weights"])

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics
  return train_step


def make_eval_step(model) -> Callable:
  def eval_step(params, batch):
    logits = model.apply({"params": params}, batch["tokens"], batch.get("mask"), train=False)
    return loss_and_metrics(logits, batch["labels"], batch["weights"])[1]
  return eval_step


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, order: np.ndarray | None = None):
  """Yields fixed-shape batches; the last one is filled up with weight-0 rows so nothing recompiles."""
  order = np.arange(len(x)) if order is None else order
  for start in range(0, len(order), batch_size):
    index = order[start:start + batch_size]
    weights = np.ones(batch_size, np.float32)
    if len(index) < batch_size:
      weights[len(index):] = 0.0
      index = np.concatenate([index, np.zeros(batch_size - len(index), index.dtype)])
    yield {"tokens": x[index], "labels": y[index], "weights": weights}


def _sum_metrics(total, metrics):
  return metrics if total is None else jax.tree.map(jnp.add, total, metrics)


def _finish(total) -> tuple[float, float]:
  total = jax.device_get(total)
  count = max(float(total["count"]), 1.0)
  return float(total["loss_sum"]) / count, float(total["correct"]) / count


class Progress:
  """A one-line progress bar on stderr with examples/s and loss; silent when stderr is not a terminal."""

  def __init__(self, label: str, total_steps: int, batch_size: int, stream=None):
    self.stream = stream or sys.stderr
    self.enabled = self.stream.isatty()
    self.label, self.total, self.batch_size = label, total_steps, batch_size
    self.start = time.perf_counter()

  def update(self, step: int, metrics) -> None:
    if not self.enabled or (step % 10 and step != self.total):
      return
    loss, _ = _finish(metrics)  # a device sync, only when someone is watching
    rate = step * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
    filled = int(30 * step / self.total)
    self.stream.write(f"\r{self.label} [{'=' * filled}{' ' * (30 - filled)}] {step}/{self.total} "
                      f"{rate:,.0f} ex/s loss {loss:.4f}")
    self.stream.flush()

  def close(self) -> None:
    if self.enabled:
      self.stream.write("\n")


def evaluate(eval_step, params, x, y, batch_size):
  total = None
  for batch in batches(x, y, batch_size):
    total = _sum_metrics(total, eval_step(params, batch))
  return _finish(total)


def fit(model, data, config, *, seed: int, label: str = "", on_epoch=None) -> tuple[dict, TrainState]:
  """Trains ``model`` on ``data`` (an `EncodedDataset`) as ``config`` says.

  Returns ``(record, state)``: the record has ``seed``, ``param_count``, ``compile_s`` and ``epochs`` (a
  list of `EpochMetrics` as dicts), ready for `seqclf.results`; ``state`` is the final `TrainState`.
  ``on_epoch(EpochMetrics)`` is called after every epoch.
  """
  validate(config)
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  shuffle_rng = np.random.default_rng(seed)
  sample = next(batches(data.x_train, data.y_train, config.batch_size))
  params = model.init({"params": init_key, "dropout": init_key}, sample["tokens"], train=False)["params"]
  state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config))
  eval_sample = next(batches(data.x_test, data.y_test, config.eval_batch_size))

  compile_start = time.perf_counter()
  train_step = jax.jit(make_train_step(model), donate_argnums=0).lower(state, sample, dropout_key).compile()
  eval_step = jax.jit(make_eval_step(model)).lower(state.params, eval_sample).compile()
  compile_s = time.perf_counter() - compile_start

  steps_per_epoch = -(-len(data.x_train) // config.batch_size)
  epochs = []
  for epoch in range(1, config.epochs + 1):
    progress = Progress(f"{label} epoch {epoch}/{config.epochs}", steps_per_epoch, config.batch_size)
    order = shuffle_rng.permutation(len(data.x_train))
    total = None
    start = time.perf_counter()
    for step, batch in enumerate(batches(data.x_train, data.y_train, config.batch_size, order), 1):
      state, metrics = train_step(state, batch, dropout_key)
      total = _sum_metrics(total, metrics)
      progress.update(step, total)
    jax.block_until_ready((state, total))
    epoch_s = time.perf_counter() - start
    progress.close()
    train_loss, train_acc = _finish(total)
    eval_start = time.perf_counter()
    test_loss, test_acc = evaluate(eval_step, state.params, data.x_test, data.y_test, config.eval_batch_size)
    metrics = EpochMetrics(epoch=epoch, epoch_s=epoch_s, examples_per_s=len(data.x_train) / epoch_s,
                           train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                           test_acc=test_acc, eval_s=time.perf_counter() - eval_start)
    epochs.append(dataclasses.asdict(metrics))
    if on_epoch:
      on_epoch(metrics)
  record = {"seed": seed, "param_count": int(sum(x.size for x in jax.tree.leaves(state.params))),
            "compile_s": compile_s, "epochs": epochs}
  return record, state

"""Training: train state, jitted train/eval steps, the epoch loop, timing and metrics.

Three ways to feed an epoch, chosen by the config:
  * fixed-length host batches (the article's setup): one jitted step per batch;
  * ``num_buckets > 0``: length-bucketed host batches (`seqclf.data.batching`), one compiled step per
    bucket length, the LSTM masked so padding leaves its state unchanged;
  * ``device_resident``: the training arrays are put on the device(s) once; each epoch's shuffle and
    batch gathers happen on device and ``steps_per_dispatch`` train steps run inside one jitted
    `lax.scan`, so the host dispatches a few calls per epoch instead of one per batch.
All of them run data parallel over `seqclf.parallel.make_mesh()` (one device is a mesh of one).

Timing rules (the only place they live for training): steps are compiled ahead of time
(``jit(...).lower().compile()``) and that time is reported apart as ``compile_s``; an epoch's clock stops
only after ``block_until_ready()`` on the final state, so ``epoch_s`` is steady-state time of the epoch
(device work plus the host's batching and dispatch), never compilation. Evaluation is timed apart.
"""

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seqclf import checkpoint, models, parallel
from seqclf.data import batching
from seqclf.errors import ConfigError, DivergedError, ResourceError  # noqa: F401 (re-exported)

# Bucket lengths are rounded up to a multiple of this: even for the CNN's pool windows, and whole
# SIMD/tile widths for the matmuls.
BUCKET_MULTIPLE = 16
# Metrics combined with min instead of sum over steps; NO_STEP marks "no non-finite loss seen".
_MIN_METRICS = ("first_nonfinite_step",)
NO_STEP = jnp.iinfo(jnp.int32).max


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
  if config.get("steps_per_dispatch", 0) < 0:
    raise ConfigError("--config.steps_per_dispatch must be >= 0 (0: a whole epoch per dispatch)")
  if config.get("device_resident") and config.get("num_buckets"):
    raise ConfigError("--config.device_resident and --config.num_buckets cannot be combined yet; choose one")


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
  metrics = {
    "loss_sum": (losses * weights).sum(),
    "correct": ((predictions == labels) * weights).sum(),
    "count": count,
  }
  return loss, metrics


def _mask(tokens, use_mask: bool):
  return tokens != 0 if use_mask else None


def make_train_step(model, use_mask: bool = False) -> Callable:
  """``(state, batch, dropout_key) -> (state, metrics)``; dropout keys derive from the step number."""

  def train_step(state, batch, dropout_key):
    dropout_key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
      logits = model.apply(
        {"params": params},
        batch["tokens"],
        _mask(batch["tokens"], use_mask),
        train=True,
        rngs={"dropout": dropout_key},
      )
      return loss_and_metrics(logits, batch["labels"], batch["weights"])

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # Checked on the host once per epoch (no per-step sync); min-reduced, so the first one is kept.
    metrics["first_nonfinite_step"] = jnp.where(jnp.isfinite(loss), NO_STEP, state.step)
    return state.apply_gradients(grads=grads), metrics

  return train_step


def make_eval_step(model, use_mask: bool = False) -> Callable:
  def eval_step(params, batch):
    logits = model.apply({"params": params}, batch["tokens"], _mask(batch["tokens"], use_mask), train=False)
    return loss_and_metrics(logits, batch["labels"], batch["weights"])[1]

  return eval_step


def make_train_chunk(train_step, batch_size: int, steps: int, data_sharding) -> Callable:
  """``steps`` train steps in one call, gathering each batch on device from the resident arrays.

  ``order`` [steps_per_epoch * batch_size] holds the epoch's example indices (padded with index 0) and
  ``weights`` marks the padding with 0; ``first_step`` is where this chunk starts in the epoch.
  """

  def train_chunk(state, x, y, order, weights, dropout_key, first_step):
    def one_step(state, i):
      start = (first_step + i) * batch_size
      index = jax.lax.dynamic_slice_in_dim(order, start, batch_size)
      batch = {
        "tokens": x[index],
        "labels": y[index],
        "weights": jax.lax.dynamic_slice_in_dim(weights, start, batch_size),
      }
      batch = jax.lax.with_sharding_constraint(batch, data_sharding)
      return train_step(state, batch, dropout_key)

    state, metrics = jax.lax.scan(one_step, state, jnp.arange(steps))
    return state, {
      key: (jnp.min if key in _MIN_METRICS else jnp.sum)(value) for key, value in metrics.items()
    }

  return train_chunk


def device_epoch_plan(shuffle_key, epoch, n: int, batch_size: int):
  """The epoch's shuffled order, computed on device, padded to whole batches, and its weights."""
  steps = -(-n // batch_size)
  order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
  padding = steps * batch_size - n
  order = jnp.concatenate([order, jnp.zeros(padding, order.dtype)])
  weights = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(padding, jnp.float32)])
  return order, weights


def _sum_metrics(total, metrics):
  if total is None:
    return metrics
  return {
    key: (jnp.minimum if key in _MIN_METRICS else jnp.add)(total[key], value)
    for key, value in metrics.items()
  }


def check_finite(total, epoch: int) -> None:
  """Raises `DivergedError` naming the first step whose loss was NaN or infinite, if any."""
  step = int(jax.device_get(total["first_nonfinite_step"]))
  if step != NO_STEP:
    raise DivergedError(
      f"the training loss became NaN or infinite at step {step + 1} (epoch {epoch}); "
      "lower --config.learning_rate or set --config.grad_clip_norm (e.g. 1.0); the "
      "last good checkpoint is the previous epoch's"
    )


def check_fits_in_memory(compiled_steps) -> None:
  """Raises `ResourceError` before training if the largest compiled step cannot fit on the device.

  Uses XLA's own memory analysis of the compiled step (arguments, outputs and temporaries), so the
  estimate is exact for the step and is known before the big buffers are allocated.
  """
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit")
  if limit is None and device.platform == "cpu":
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
  if not limit:
    return
  needed = 0
  for compiled in compiled_steps:
    analysis = compiled.memory_analysis()
    if analysis is None:
      return
    needed = max(
      needed, analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    )
  if needed > limit:
    raise ResourceError(
      f"one training step needs {needed / 2**30:.1f} GiB but {device.platform} has "
      f"{limit / 2**30:.1f} GiB available; lower --config.batch_size or "
      "--config.maxlen (or use --bucketing)"
    )


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
    self.shown = 0

  def update(self, step: int, metrics) -> None:
    if not self.enabled or (step - self.shown < 10 and step != self.total):
      return
    self.shown = step
    loss, _ = _finish(metrics)  # a device sync, only when someone is watching
    rate = step * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
    filled = int(30 * step / self.total)
    self.stream.write(
      f"\r{self.label} [{'=' * filled}{' ' * (30 - filled)}] {step}/{self.total} "
      f"{rate:,.0f} ex/s loss {loss:.4f}"
    )
    self.stream.flush()

  def close(self) -> None:
    if self.enabled:
      self.stream.write("\n")


def uses_mask(config) -> bool:
  """Whether the model sees a padding mask: asked for, or implied by length buckets."""
  return bool(config.get("mask") or config.get("num_buckets"))


def evaluate(model, params, x, y, config) -> tuple[float, float]:
  """(loss, accuracy) of ``params`` on arrays ``x``, ``y``, fed as training fed its evaluation split."""
  use_mask = uses_mask(config)
  if config.get("num_buckets"):
    x = batching.left_align(x, config.get("padding", "pre"))
  eval_step = jax.jit(make_eval_step(model, use_mask))
  total = None
  for batch in batching.batches(np.asarray(x), np.asarray(y), config.eval_batch_size):
    total = _sum_metrics(total, eval_step(params, batch))
  return _finish(total)


def _abstract(tree, sharding):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree
  )


class _Feeder:
  """Host batches for training and evaluation: fixed length, or length buckets."""

  def __init__(self, data, config, seed: int):
    self.seed, self.batch_size, self.eval_batch_size = seed, config.batch_size, config.eval_batch_size
    self.num_buckets = config.get("num_buckets", 0)
    self.x_train, self.y_train, self.x_test, self.y_test = (
      data.x_train,
      data.y_train,
      data.x_test,
      data.y_test,
    )
    if self.num_buckets:
      padding = config.get("padding", "pre")
      self.x_train = batching.left_align(data.x_train, padding)
      self.x_test = batching.left_align(data.x_test, padding)
      self.n_train = batching.token_lengths(self.x_train, "post")
      self.n_test = batching.token_lengths(self.x_test, "post")
      self.lengths = batching.bucket_lengths(
        self.n_train, self.num_buckets, data.x_train.shape[1], BUCKET_MULTIPLE
      )
    else:
      self.lengths = [data.x_train.shape[1]]

  def train(self, epoch: int):
    order = batching.epoch_order(self.seed, epoch, len(self.x_train))
    if not self.num_buckets:
      return batching.batches(self.x_train, self.y_train, self.batch_size, order)
    return batching.bucketed_batches(
      self.x_train,
      self.y_train,
      self.n_train,
      self.lengths,
      self.batch_size,
      order,
      np.random.default_rng([self.seed, epoch, 1]),
    )

  def test(self):
    if not self.num_buckets:
      return batching.batches(self.x_test, self.y_test, self.eval_batch_size)
    return batching.bucketed_batches(
      self.x_test, self.y_test, self.n_test, self.lengths, self.eval_batch_size, np.arange(len(self.x_test))
    )

  def batch_spec(self, batch_size: int, length: int, sharding=None):
    """The shapes of a batch, without allocating it (a batch can be too large to exist)."""
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    return {
      "tokens": spec((batch_size, length), jnp.int32),
      "labels": spec((batch_size,), jnp.int32),
      "weights": spec((batch_size,), jnp.float32),
    }

  def steps_per_epoch(self) -> int:
    if not self.num_buckets:
      return -(-len(self.x_train) // self.batch_size)
    bucket_of = np.searchsorted(np.asarray(self.lengths), self.n_train, side="left")
    return int(sum(-(-np.sum(bucket_of == b) // self.batch_size) for b in range(len(self.lengths))))


def fit(
  model,
  data,
  config,
  *,
  seed: int,
  label: str = "",
  on_epoch=None,
  mesh=None,
  run_dir: str | None = None,
  initial_embedding=None,
) -> tuple[dict, TrainState]:
  """Trains ``model`` on ``data`` (an `EncodedDataset`) as ``config`` says.

  ``data.x_test``/``y_test`` is the split evaluated after every epoch (the test split in the article,
  a validation split when one is carved out). With ``run_dir``, a checkpoint is saved after every epoch
  (the last and the best by evaluation accuracy are kept) and a run that finds one there resumes after
  it, replaying exactly what an uninterrupted run would do. ``initial_embedding`` [top_words, embed_dim]
  replaces the initial embedding (pretrained vectors). ``config.patience`` > 0 stops after that many
  epochs without a better evaluation accuracy.

  Returns ``(record, state)``: the record has ``seed``, ``param_count``, ``compile_s``, ``shapes`` (the
  compiled sequence lengths), ``devices``, ``stopped_early`` and ``epochs`` (a list of `EpochMetrics` as
  dicts), ready for `seqclf.results`; ``state`` is the final `TrainState`. ``on_epoch(EpochMetrics)`` is
  called after every epoch trained here.
  """
  validate(config)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  data_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  feeder = _Feeder(data, config, seed)
  use_mask = uses_mask(config)

  # Raw uint32 keys: they cross into sharded (possibly multi-process) arrays like any other array.
  init_key, dropout_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = model.init(
    {"params": init_key, "dropout": init_key}, jnp.zeros((1, feeder.lengths[-1]), jnp.int32), train=False
  )["params"]
  if initial_embedding is not None:
    if np.shape(initial_embedding) != params["embedding"].shape:
      raise ConfigError(
        f"pretrained embedding has shape {np.shape(initial_embedding)}, the model needs "
        f"{params['embedding'].shape}; match --config.top_words and --config.model.embed_dim"
      )
    params = {**params, "embedding": jnp.asarray(initial_embedding, params["embedding"].dtype)}
  state = TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config))
  checkpointer = checkpoint.Checkpointer(run_dir) if run_dir else None
  start_epoch, epochs = 0, []
  restored = checkpointer.restore_latest(state) if checkpointer else None
  if restored:  # before sharding and compiling, so a resumed state is placed like a fresh one
    state, start_epoch, epochs = restored
  state, dropout_key, shuffle_key = parallel.shard((state, dropout_key, shuffle_key), replicated)

  train_step = make_train_step(model, use_mask)
  compile_start = time.perf_counter()
  jit_train = jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))
  jit_eval = jax.jit(make_eval_step(model, use_mask), out_shardings=replicated)
  train_steps = {
    length: jit_train.lower(
      state, feeder.batch_spec(config.batch_size, length, data_sharding), dropout_key
    ).compile()
    for length in feeder.lengths
  }
  eval_steps = {
    length: jit_eval.lower(
      state.params, feeder.batch_spec(config.eval_batch_size, length, data_sharding)
    ).compile()
    for length in feeder.lengths
  }
  steps_per_epoch = feeder.steps_per_epoch()
  run_chunks = {}
  if config.get("device_resident"):
    chunk = config.get("steps_per_dispatch", 0) or steps_per_epoch
    chunks = [chunk] * (steps_per_epoch // chunk) + (
      [steps_per_epoch % chunk] if steps_per_epoch % chunk else []
    )
    plan = jax.jit(device_epoch_plan, static_argnums=(2, 3), out_shardings=replicated)
    order, weights = plan(shuffle_key, 1, len(data.x_train), config.batch_size)
    run_chunks = {
      n: jax.jit(
        make_train_chunk(train_step, config.batch_size, n, data_sharding),
        donate_argnums=0,
        out_shardings=(replicated, replicated),
      )
      .lower(state, *_abstract((data.x_train, data.y_train), replicated), order, weights, dropout_key, 0)
      .compile()
      for n in set(chunks)
    }
  compile_s = time.perf_counter() - compile_start
  # The resident arrays are arguments of the chunk steps, so they are counted there.
  check_fits_in_memory([*train_steps.values(), *eval_steps.values(), *run_chunks.values()])
  if config.get("device_resident"):
    x_train, y_train = parallel.shard((data.x_train, data.y_train), replicated)

  def run_epoch(state, epoch, progress):
    total, done = None, 0
    if config.get("device_resident"):
      order, weights = plan(shuffle_key, epoch, len(data.x_train), config.batch_size)
      for n in chunks:
        state, metrics = run_chunks[n](state, x_train, y_train, order, weights, dropout_key, done)
        total, done = _sum_metrics(total, metrics), done + n
        progress.update(done, total)
      return state, total
    for batch in feeder.train(epoch):
      state, metrics = train_steps[batch["tokens"].shape[1]](
        state, parallel.shard(batch, data_sharding), dropout_key
      )
      total, done = _sum_metrics(total, metrics), done + 1
      progress.update(done, total)
    return state, total

  def evaluate_split(params):
    total = None
    for batch in feeder.test():
      total = _sum_metrics(
        total, eval_steps[batch["tokens"].shape[1]](params, parallel.shard(batch, data_sharding))
      )
    return _finish(total)

  try:
    state, stopped_early = _epoch_loop(
      state,
      epochs,
      start_epoch,
      config,
      run_epoch,
      evaluate_split,
      label,
      steps_per_epoch,
      len(data.x_train),
      checkpointer,
      on_epoch,
    )
  finally:
    if checkpointer:
      checkpointer.close()
  record = {
    "seed": seed,
    "param_count": models.param_count(state.params),
    "compile_s": compile_s,
    "shapes": feeder.lengths,
    "devices": int(mesh.devices.size),
    "stopped_early": stopped_early,
    "epochs": epochs,
  }
  return record, state


def _epoch_loop(
  state,
  epochs,
  start_epoch,
  config,
  run_epoch,
  evaluate_split,
  label,
  steps_per_epoch,
  n_train,
  checkpointer,
  on_epoch,
):
  """Epochs ``start_epoch + 1 ..``: train, check, evaluate, checkpoint, report, maybe stop early."""
  patience = config.get("patience", 0)
  for epoch in range(start_epoch + 1, config.epochs + 1):
    if patience and _epochs_since_best(epochs) >= patience:
      return state, True
    progress = Progress(f"{label} epoch {epoch}/{config.epochs}", steps_per_epoch, config.batch_size)
    start = time.perf_counter()
    state, total = run_epoch(state, epoch, progress)
    jax.block_until_ready((state, total))
    epoch_s = time.perf_counter() - start
    progress.close()
    check_finite(total, epoch)
    train_loss, train_acc = _finish(total)
    eval_start = time.perf_counter()
    test_loss, test_acc = evaluate_split(state.params)
    metrics = EpochMetrics(
      epoch=epoch,
      epoch_s=epoch_s,
      examples_per_s=n_train / epoch_s,
      train_loss=train_loss,
      train_acc=train_acc,
      test_loss=test_loss,
      test_acc=test_acc,
      eval_s=time.perf_counter() - eval_start,
    )
    epochs.append(dataclasses.asdict(metrics))
    if checkpointer:
      checkpointer.save(epoch, state, history=epochs, metric=test_acc)
    if on_epoch:
      on_epoch(metrics)
  return state, False


def _epochs_since_best(epochs: list[dict]) -> int:
  """Epochs after the best evaluation accuracy so far; only a strictly better one resets it (Keras)."""
  accs = [e["test_acc"] for e in epochs]
  return len(accs) - 1 - max(range(len(accs)), key=lambda i: (accs[i], -i)) if accs else 0

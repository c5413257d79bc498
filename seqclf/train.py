"""Training: train state, jitted train/eval steps, and the epoch loop that times and checks them.

How batches reach the steps (host batches, length buckets, device-resident arrays) is `seqclf.feeding`;
the terminal progress line is `seqclf.progress`; the memory check before training is `seqclf.memory`.
Everything runs data parallel over `seqclf.parallel.make_mesh()` (one device is a mesh of one).

Timing rules (the only place they live for training): steps are compiled ahead of time
(``jit(...).lower().compile()``) and that time is reported apart as ``compile_s``; an epoch's clock stops
only after ``block_until_ready()`` on the final state, so ``epoch_s`` is steady-state time of the epoch
(device work plus the host's batching and dispatch), never compilation. Evaluation is timed apart.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seqclf import checkpoint, feeding, lowering, memory, models, parallel
from seqclf.data import batching
from seqclf.data.encoding import INDEX_FROM
from seqclf.errors import ConfigError, DivergedError
from seqclf.progress import Progress

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


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# Seeds become JAX PRNG keys and numpy generators: both take integers in [0, 2**32) alike.
MAX_SEED = 2**32 - 1


def check_seed(seed, flag: str = "--seed") -> None:
  """Refuses a seed that a PRNG key or numpy generator would not take (negative, or over 32 bits)."""
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
    raise ConfigError(f"{flag} takes integers from 0 to {MAX_SEED}, got {seed!r}")


def _check_positive_ints(config, keys) -> None:
  for key in keys:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ConfigError(f"--config.{key} must be a positive integer, got {value!r}")


def check_prediction_fields(config) -> None:
  """Rejects the values of the fields a trained model's prediction reads (`seqclf.predict`) as `validate`
  does: the encoding's and the evaluation batch's; the model's are held by `models.check_fields`."""
  _check_positive_ints(config, ("eval_batch_size", "top_words", "maxlen"))
  if config["top_words"] <= INDEX_FROM:
    raise ConfigError(
      f"--config.top_words must be above {INDEX_FROM} (ids up to {INDEX_FROM} are reserved), got {config['top_words']}"
    )
  for key in ("padding", "truncating"):
    if config.get(key, "pre") not in ("pre", "post"):
      raise ConfigError(f"--config.{key} must be 'pre' or 'post', got {config[key]!r}")


def validate(config) -> None:
  """Rejects every config value that cannot work, with the flag to fix, before a driver writes anything:
  the training fields here, the model's in `models.check_fields` (the engine held to the mask, dropout and
  precision it will be asked for)."""
  _check_positive_ints(config, ("batch_size", "epochs"))
  check_prediction_fields(config)
  if not _is_number(config.learning_rate) or not 0 < config.learning_rate < 10:
    raise ConfigError(f"--config.learning_rate must be in (0, 10), got {config.learning_rate}")
  adam_eps = config.get("adam_eps", 1e-7)
  if not _is_number(adam_eps) or not 0 < adam_eps < float("inf"):
    raise ConfigError(f"--config.adam_eps must be a finite number > 0, got {config.adam_eps!r}")
  clip = config.get("grad_clip_norm", 0.0)
  if not _is_number(clip) or not 0 <= clip < float("inf"):
    raise ConfigError(
      f"--config.grad_clip_norm must be a finite number >= 0 (0: no clipping), got {config.grad_clip_norm!r}"
    )
  for key in ("mask", "device_resident"):
    if not isinstance(config.get(key, False), bool):
      raise ConfigError(f"--config.{key} must be True or False, got {config[key]!r}")
  buckets = config.get("num_buckets", 0)
  if not isinstance(buckets, int) or isinstance(buckets, bool) or not 0 <= buckets <= 8:
    raise ConfigError(
      f"--config.num_buckets must be in 0..8 (0: no buckets; each bucket is one compiled shape), got {buckets!r}"
    )
  steps = config.get("steps_per_dispatch", 0)
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    raise ConfigError("--config.steps_per_dispatch must be an integer >= 0 (0: a whole epoch per dispatch)")
  if config.get("device_resident") and config.get("num_buckets"):
    raise ConfigError("--config.device_resident and --config.num_buckets cannot be combined yet; choose one")
  if "model" in config:
    # Held for the cell of each variant the run trains (a variant's cell is not in config.model), so a
    # GRU's engine is checked as the GRU's and named so.
    names = (
      [config.variant]
      if "variant" in config
      else models.parse_variants(config.variants)
      if "variants" in config
      else []
    )
    for cell in sorted(
      {models.VARIANTS[name].get("cell", "lstm") for name in names if name in models.VARIANTS} or {"lstm"}
    ):
      fields = {"cell": cell, **config.model}
      models.check_fields(fields, masked=uses_mask(config), platform=lowering.target_platform())


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


def sum_metrics(total, metrics):
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


def finish(total) -> tuple[float, float]:
  total = jax.device_get(total)
  count = max(float(total["count"]), 1.0)
  return float(total["loss_sum"]) / count, float(total["correct"]) / count


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
    total = sum_metrics(total, eval_step(params, batch))
  return finish(total)


def create_train_state(model, config, key, length: int, initial_embedding=None) -> TrainState:
  """Fresh parameters (``initial_embedding`` [top_words, embed_dim] replacing the embedding's) and Adam."""
  params = model.init({"params": key, "dropout": key}, jnp.zeros((1, length), jnp.int32), train=False)[
    "params"
  ]
  if initial_embedding is not None:
    if np.shape(initial_embedding) != params["embedding"].shape:
      raise ConfigError(
        f"pretrained embedding has shape {np.shape(initial_embedding)}, the model needs "
        f"{params['embedding'].shape}; match --config.top_words and --config.model.embed_dim"
      )
    params = {**params, "embedding": jnp.asarray(initial_embedding, params["embedding"].dtype)}
  return TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config))


def _abstract(tree, sharding):
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sharding), tree
  )


class _Epochs:
  """One fit's steps, compiled ahead of time for its feed: trains an epoch, evaluates the eval split."""

  def __init__(self, model, data, config, feeder, state, dropout_key, shuffle_key, mesh):
    self.feeder, self.dropout_key, self.shuffle_key = feeder, dropout_key, shuffle_key
    self.data_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    self.steps_per_epoch = feeder.steps_per_epoch()
    train_step = make_train_step(model, uses_mask(config))
    compile_start = time.perf_counter()
    jit_train = jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))
    jit_eval = jax.jit(make_eval_step(model, uses_mask(config)), out_shardings=replicated)
    self.train_steps = {
      length: jit_train.lower(
        state, feeding.batch_spec(config.batch_size, length, self.data_sharding), dropout_key
      ).compile()
      for length in feeder.lengths
    }
    self.eval_steps = {
      length: jit_eval.lower(
        state.params, feeding.batch_spec(config.eval_batch_size, length, self.data_sharding)
      ).compile()
      for length in feeder.lengths
    }
    self.resident, self.chunk_steps = None, {}
    if config.get("device_resident"):
      self.resident = feeding.DeviceEpochs(
        len(data.x_train),
        config.batch_size,
        self.steps_per_epoch,
        config.get("steps_per_dispatch", 0),
        replicated,
      )
      order, weights = self.resident.plan(shuffle_key, 1)
      arrays = _abstract((data.x_train, data.y_train), replicated)
      self.chunk_steps = {
        n: jax.jit(
          make_train_chunk(train_step, config.batch_size, n, self.data_sharding),
          donate_argnums=0,
          out_shardings=(replicated, replicated),
        )
        .lower(state, *arrays, order, weights, dropout_key, 0)
        .compile()
        for n in set(self.resident.chunks)
      }
    self.compile_s = time.perf_counter() - compile_start
    # The resident arrays are arguments of the chunk steps, so they are counted there.
    memory.check_fits_in_memory(
      [*self.train_steps.values(), *self.eval_steps.values(), *self.chunk_steps.values()]
    )
    if self.resident:
      self.x_train, self.y_train = parallel.shard((data.x_train, data.y_train), replicated)

  def train(self, loop: "_Loop", epoch: int, progress: Progress, trace=None):
    """Trains ``epoch`` from ``loop.state``, advancing ``loop``; returns the epoch's summed metrics."""
    annotate = trace.step if trace else lambda _: contextlib.nullcontext()
    total, done = None, 0
    if self.resident:
      order, weights = self.resident.plan(self.shuffle_key, epoch)
      feed = (
        (self.chunk_steps[n], (self.x_train, self.y_train, order, weights, self.dropout_key, start), n)
        for n, start in zip(self.resident.chunks, np.cumsum([0, *self.resident.chunks]).tolist())
      )
    else:
      feed = (
        (
          self.train_steps[batch["tokens"].shape[1]],
          (parallel.shard(batch, self.data_sharding), self.dropout_key),
          1,
        )
        for batch in self.feeder.train(epoch)
      )
    for step, arguments, steps in feed:
      with annotate(loop.steps_done):
        loop.state, metrics = step(loop.state, *arguments)
      total, done, loop.steps_done = sum_metrics(total, metrics), done + steps, loop.steps_done + steps
      progress.update(done, total)
      if trace:
        trace.advance(loop.steps_done, (loop.state, metrics))
    return total

  def evaluate(self, params) -> tuple[float, float]:
    total = None
    for batch in self.feeder.test():
      step = self.eval_steps[batch["tokens"].shape[1]]
      total = sum_metrics(total, step(params, parallel.shard(batch, self.data_sharding)))
    return finish(total)


@dataclasses.dataclass
class _Loop:
  """What the epoch loop carries from epoch to epoch."""

  state: TrainState
  history: list[dict]  # every epoch's `EpochMetrics` as a dict, a resumed run's earlier ones included
  steps_done: int = 0  # train steps dispatched by this process (the profiler trace's clock)


def fit(
  model,
  data,
  config,
  *,
  seed: int,
  label: str = "",
  on_epoch=None,
  on_start=None,
  mesh=None,
  run_dir: str | None = None,
  initial_embedding=None,
  trace=None,
) -> tuple[dict, TrainState]:
  """Trains ``model`` on ``data`` as ``config`` says.

  Args:
    model: a `seqclf.models.SequenceClassifier` (`seqclf.models.create`).
    data: an `EncodedDataset`; ``x_test``/``y_test`` is the split evaluated after every epoch (the test
      split in the article, a validation split when one is carved out).
    config: the training config (``seqclf/configs/default.py``'s fields); ``config.patience`` > 0 stops
      after that many epochs without a better evaluation accuracy.
    seed: initialisation, shuffling and dropout.
    label: names the run in the progress line.
    on_epoch: called with each `EpochMetrics` after every epoch trained here, once its checkpoint is
      saved.
    on_start: called with the restored history (the `EpochMetrics` dicts of the epochs trained before,
      [] for a fresh run) once the state is restored and the steps compiled, before the first epoch; what
      a caller writes there is not written by a start that fails before training.
    mesh: a `seqclf.parallel` mesh to shard batches over; default: all local devices.
    run_dir: with it, a checkpoint after every epoch (the last and the best by evaluation accuracy
      kept), and a run that finds one there resumes after it, replaying exactly what an uninterrupted
      run would do.
    initial_embedding: [top_words, embed_dim] replacing the initial embedding (pretrained vectors).
    trace: a `seqclf.profiling.StepTrace` recording steps after its warm-up: with host batches inside
      the first epoch trained here when it has enough steps, with device-resident chunks from the second
      dispatch on.

  Returns:
    ``(record, state)``: the record has ``seed``, ``param_count``, ``compile_s``, ``shapes`` (the
    compiled sequence lengths), ``devices``, ``stopped_early`` and ``epochs`` (a list of `EpochMetrics`
    as dicts), ready for `seqclf.results`; ``state`` is the final `TrainState`.
  """
  validate(config)
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
  feeder = feeding.HostFeeder(data, config, seed)

  # Raw uint32 keys: they cross into sharded (possibly multi-process) arrays like any other array.
  init_key, dropout_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  state = create_train_state(model, config, init_key, feeder.lengths[-1], initial_embedding)
  checkpointer = checkpoint.Checkpointer(run_dir) if run_dir else None
  start_epoch, history = 0, []
  try:
    restored = checkpointer.restore_latest(state) if checkpointer else None
    if restored:  # before sharding and compiling, so a resumed state is placed like a fresh one
      state, start_epoch, history = restored
    state, dropout_key, shuffle_key = parallel.shard(
      (state, dropout_key, shuffle_key), parallel.replicated(mesh)
    )
    epochs = _Epochs(model, data, config, feeder, state, dropout_key, shuffle_key, mesh)
  except BaseException:
    # Closed before the error leaves: orbax's background clean-up thread would otherwise outlive the
    # interpreter's executors and print its own traceback under the one error line.
    if checkpointer:
      checkpointer.close()
    raise
  loop = _Loop(state, history)
  try:
    if on_start:
      on_start(list(history))
    stopped_early = _train_epochs(loop, epochs, config, start_epoch, label, checkpointer, on_epoch, trace)
  finally:
    if trace:
      trace.close()
    if checkpointer:
      checkpointer.close()
  record = {
    "seed": seed,
    "param_count": models.param_count(loop.state.params),
    "compile_s": epochs.compile_s,
    "shapes": feeder.lengths,
    "devices": int(mesh.devices.size),
    "stopped_early": stopped_early,
    "epochs": loop.history,
  }
  return record, loop.state


def _train_epochs(loop, epochs, config, start_epoch, label, checkpointer, on_epoch, trace) -> bool:
  """Epochs ``start_epoch + 1 ..``: train, check, evaluate, checkpoint, report; True if it stopped early."""
  patience = config.get("patience", 0)
  n_train = len(epochs.feeder.x_train)
  for epoch in range(start_epoch + 1, config.epochs + 1):
    if patience and epochs_since_best(loop.history) >= patience:
      return True
    progress = Progress(f"{label} epoch {epoch}/{config.epochs}", epochs.steps_per_epoch, config.batch_size)
    start = time.perf_counter()
    total = epochs.train(loop, epoch, progress, trace)
    jax.block_until_ready((loop.state, total))
    epoch_s = time.perf_counter() - start
    progress.close()
    check_finite(total, epoch)
    train_loss, train_acc = finish(total)
    eval_start = time.perf_counter()
    test_loss, test_acc = epochs.evaluate(loop.state.params)
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
    loop.history.append(dataclasses.asdict(metrics))
    if checkpointer:
      checkpointer.save(epoch, loop.state, history=loop.history, metric=test_acc)
    if on_epoch:
      on_epoch(metrics)
  return False


def epochs_since_best(epochs: list[dict]) -> int:
  """Epochs after the best evaluation accuracy so far; only a strictly better one resets it (Keras), so of
  equal accuracies the first is the best, as for the checkpoint kept and reported as the best
  (`seqclf.checkpoint.Checkpointer.best_epoch`)."""
  accs = [e["test_acc"] for e in epochs]
  return len(accs) - 1 - max(range(len(accs)), key=lambda i: (accs[i], -i)) if accs else 0

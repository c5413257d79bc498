"""A training run on disk: its config, and orbax checkpoints of its train state after every epoch.

A run directory holds::

  RUN/config.json      the full config, plus "variant", "seed" and "label_names" (write_run_config)
  RUN/vocab.json       the vocabulary the data was encoded with (Vocabulary.save)
  RUN/checkpoints/<epoch>/
    params/            the model parameters
    optimizer/         the optimizer state
    meta/              {"epoch", "step", "history"} as JSON: history is train.fit's per-epoch metrics,
                       whose test_* name the split evaluated each epoch (validation when one is carved)
    metrics/           {"metric": ...}, the value that ranks checkpoints (orbax's own item)

Only two checkpoints are kept: the last one (to resume) and the best one by its metric (to predict with).
Saves are synchronous and atomic: orbax writes a step into ``<epoch>.orbax-checkpoint-tmp-*``, writes its
``commit_success.txt`` marker last, then renames it to ``<epoch>``. A process killed mid-save therefore
leaves either a temporary directory or (on file systems without atomic rename) a step without its marker;
both are ignored when restoring and removed by the next writer, so a resumed run starts from the last
complete epoch.

Resuming replays an uninterrupted run exactly, provided that the loop derives everything random from
(seed, epoch, step): the shuffled order from ``batching.epoch_order(seed, epoch, n)`` and dropout keys from
``fold_in(key, state.step)``, the step being restored with the state.
"""

import json
import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp

from seqclf import results
from seqclf.errors import ConfigError, DataError

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_DIR = "checkpoints"
WHICH = ("best", "last")

# The run facts write_run_config adds to the config; read_run_config takes them out again.
_RUN_KEYS = ("variant", "seed", "label_names")
# Written by orbax into a step as the last thing before the step counts as committed.
_COMMIT_MARKER = "commit_success.txt"

_logger = logging.getLogger(__name__)


def write_run_config(run_dir: str, config, *, variant: str, seed: int, label_names: list[str]) -> None:
  """Writes ``RUN/config.json``: everything needed to rebuild the model and encode texts like training.

  Args:
    run_dir: The run directory; created if missing.
    config: The run's ``ml_collections.ConfigDict`` (or a plain mapping).
    variant: The model variant (a key of ``models.VARIANTS``).
    seed: The run's seed.
    label_names: The class names, label id order: ``label_names[i]`` is the name of label ``i``.
  """
  document = json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)
  document.update(variant=variant, seed=int(seed), label_names=list(label_names))
  results.write_json_atomic(os.path.join(run_dir, CONFIG_FILE), document)


def read_run_config(run_dir: str) -> tuple[dict, str, int, list[str]]:
  """Reads what :func:`write_run_config` wrote.

  Returns:
    ``(config, variant, seed, label_names)``; ``config`` is the config as a plain dict.

  Raises:
    DataError: ``RUN/config.json`` is missing, unreadable, or lacks one of the run facts.
  """
  path = os.path.join(run_dir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as file:
      document = json.load(file)
  except FileNotFoundError:
    raise DataError(
      f"{run_dir} is not a run directory (no {CONFIG_FILE}): pass the directory a training run wrote"
    ) from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise DataError(f"cannot read {path} ({error}): the run directory is damaged, train it again") from error
  missing = [key for key in _RUN_KEYS if not isinstance(document, dict) or key not in document]
  if missing:
    raise DataError(
      f"{path} lacks {', '.join(missing)}: it was not written by write_run_config, train the run again"
    )
  variant, seed, label_names = (document.pop(key) for key in _RUN_KEYS)
  return document, variant, seed, label_names


class Checkpointer:
  """Saves a run's train state after every epoch; keeps the last and the best checkpoint.

  Use as a context manager, or call :meth:`close` when done.
  """

  def __init__(self, run_dir: str, *, writable: bool = True):
    """Opens ``RUN/checkpoints``.

    Args:
      run_dir: The run directory.
      writable: Whether this checkpointer saves. A writer creates the directory and first removes what
        an interrupted save left behind; a reader changes nothing on disk.

    Raises:
      DataError: A reader was given a run directory without checkpoints.
    """
    self.directory = os.path.abspath(os.path.join(run_dir, CHECKPOINT_DIR))
    if writable:
      _remove_uncommitted_steps(self.directory)
    elif not os.path.isdir(self.directory):
      raise DataError(
        f"no checkpoints in {run_dir} (no {CHECKPOINT_DIR}/ directory): train the run "
        "first, or pass the run directory it wrote"
      )
    metric_of = lambda metrics: metrics["metric"]
    options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False,  # a save is on disk when save() returns: safe against SIGKILL
      create=writable,
      cleanup_tmp_directories=writable,
      best_fn=metric_of,
      best_mode="max",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
        [
          ocp.checkpoint_managers.LatestN(n=1),
          # Keeps the highest metric: BestN sorts ascending (stably, so ties go to the later epoch)
          # and keeps the tail.
          ocp.checkpoint_managers.BestN(get_metric_fn=metric_of, n=1),
        ]
      ),
    )
    # Handlers named up front, so that item metadata can be read before anything is restored.
    handlers = {
      "params": ocp.StandardCheckpointHandler(),
      "optimizer": ocp.StandardCheckpointHandler(),
      "meta": ocp.JsonCheckpointHandler(),
    }
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    self._manager.close()

  def epochs(self) -> list[int]:
    """The epochs with a complete checkpoint, in increasing order."""
    return sorted(
      step
      for step in self._manager.all_steps()
      if os.path.exists(os.path.join(self.directory, str(step), _COMMIT_MARKER))
    )

  def latest_epoch(self) -> int | None:
    """The last epoch with a complete checkpoint, or None."""
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def best_epoch(self) -> int | None:
    """The complete checkpoint with the highest metric (ties: the later one), or None."""
    return max(self.epochs(), key=lambda epoch: (self._manager.metrics(epoch)["metric"], epoch), default=None)

  def save(self, epoch: int, state, *, history: list[dict], metric: float | None) -> None:
    """Saves the state after ``epoch``, then deletes checkpoints that are neither the last nor the best.

    Args:
      epoch: The epoch just finished (1-based); it names the checkpoint.
      state: The `train.TrainState` after that epoch.
      history: The per-epoch metric dicts so far (JSON-serialisable), returned again on restore.
      metric: The value that ranks checkpoints, higher is better (e.g. validation accuracy); None ranks
        this epoch below every epoch that has one (among epochs without, the last is the best).

    Raises:
      DataError: The directory already holds a checkpoint for this epoch or a later one (a run
        restarted without resuming).
    """
    latest = self.latest_epoch()
    if latest is not None and epoch <= latest:
      raise DataError(
        f"{self.directory} already has a checkpoint of epoch {latest}: resume from it, or "
        "train in a fresh run directory"
      )
    self._manager.save(
      epoch,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        optimizer=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave({"epoch": epoch, "step": int(state.step), "history": history}),
      ),
      # -inf rather than no metrics: orbax warns on every save without them.
      metrics={"metric": float("-inf") if metric is None else float(metric)},
      force=True,  # the epoch check above replaces orbax's save-interval policy
    )

  def restore_latest(self, target_state):
    """Restores the last complete checkpoint into the structure of ``target_state``.

    Args:
      target_state: A freshly created `train.TrainState` of the same model and optimizer; gives the
        tree structure, shapes and dtypes, and ``apply_fn``/``tx``.

    Returns:
      ``(state, epoch, history)``, or None when there is no complete checkpoint (start from scratch).

    Raises:
      DataError: The checkpoint does not fit ``target_state`` (another model or optimizer).
    """
    return self._restore(self.latest_epoch(), target_state)

  def restore_best(self, target_state):
    """Like :meth:`restore_latest`, for the best checkpoint (see :meth:`best_epoch`)."""
    return self._restore(self.best_epoch(), target_state)

  def restore_params(self, which: str = "best"):
    """Restores only the parameters of the best or the last checkpoint, with no model or optimizer.

    Orbax rebuilds the parameter tree from the checkpoint's own metadata, so no target is needed.

    Raises:
      ConfigError: ``which`` is not "best" or "last".
      DataError: There is no complete checkpoint.
    """
    if which not in WHICH:
      raise ConfigError(f"which checkpoint must be 'best' or 'last', got {which!r}")
    epoch = self.best_epoch() if which == "best" else self.latest_epoch()
    if epoch is None:
      raise DataError(f"no complete checkpoint in {self.directory}: train the run (at least one epoch)")
    restored = self._manager.restore(epoch, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
    return restored["params"]

  def _restore(self, epoch: int | None, target_state):
    if epoch is None:
      return None
    # Checked first because orbax reports a shape mismatch only midway through reading the arrays.
    mismatch = describe_shape_mismatch(self._manager.item_metadata(epoch)["params"].tree, target_state.params)
    if mismatch:
      raise DataError(
        f"checkpoint {self.directory}/{epoch} holds another model ({mismatch}): train in a "
        "fresh run directory, or with the config it was trained with"
      )
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    try:
      restored = self._manager.restore(
        epoch,
        args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract(target_state.params)),
          optimizer=ocp.args.StandardRestore(abstract(target_state.opt_state)),
          meta=ocp.args.JsonRestore(),
        ),
      )
    except ValueError as error:  # same parameters, another optimizer (e.g. gradient clipping toggled)
      raise DataError(
        f"checkpoint {self.directory}/{epoch} holds another optimizer state "
        f"({str(error).splitlines()[0]}): train in a fresh run directory, or with the config "
        "it was trained with"
      ) from error
    meta = restored["meta"]
    step = meta["step"]
    if isinstance(target_state.step, jax.Array):  # placed like the target's, e.g. replicated over a mesh
      step = jax.device_put(step, target_state.step.sharding)
    state = target_state.replace(params=restored["params"], opt_state=restored["optimizer"], step=step)
    return state, meta["epoch"], meta["history"]


def restore_params(run_dir: str, which: str = "best"):
  """The parameters of a run's best or last checkpoint, for prediction (see `Checkpointer.restore_params`)."""
  with Checkpointer(run_dir, writable=False) as checkpointer:
    return checkpointer.restore_params(which)


def describe_shape_mismatch(checkpoint_params, model_params) -> str | None:
  """Names the first parameter whose presence or shape differs between a checkpoint and a model.

  Args:
    checkpoint_params: The checkpoint's parameter tree (arrays, or orbax metadata: anything with
      ``.shape``).
    model_params: The model's parameter tree (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    One phrase for an error message, or None when all names and shapes agree.
  """

  def shapes(tree):
    return {
      jax.tree_util.keystr(path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }

  stored, wanted = shapes(checkpoint_params), shapes(model_params)
  for name in sorted(stored.keys() | wanted.keys()):
    if stored.get(name) != wanted.get(name):
      return (
        f"parameter {name} is {wanted.get(name, 'absent')} in the model but "
        f"{stored.get(name, 'absent')} in the checkpoint"
      )
  return None


def _remove_uncommitted_steps(directory: str) -> None:
  """Deletes step directories without orbax's commit marker: a save interrupted where rename isn't atomic.

  They would otherwise count as the latest step and block saving that epoch again. Orbax's temporary
  directories are left to its own ``cleanup_tmp_directories``.
  """
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    step_dir = os.path.join(directory, name)
    committed = os.path.exists(os.path.join(step_dir, _COMMIT_MARKER))
    if name.isdigit() and os.path.isdir(step_dir) and not committed:
      _logger.warning("Removing incomplete checkpoint %s (an interrupted save).", step_dir)
      shutil.rmtree(step_dir)

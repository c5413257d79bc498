"""A training run on disk: its config, and orbax checkpoints of its train state after every epoch.

A run directory holds::

  RUN/config.json      the full config, plus "variant", "seed", "label_names" and "data" (the data's
                       identity, `seqclf.run_identity.data_identity`) (write_run_config)
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

import contextlib
import errno
import fcntl
import inspect
import json
import logging
import os
import re
import shutil
import sys
import threading
import time

import jax
import orbax.checkpoint as ocp

from seqclf import results
from seqclf.errors import BusyError, ConfigError, DamagedCheckpointError, DataError, StorageError

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"  # holds the PID of the process training the run (see `lock_run_dir`)
# What a write that fails because of where it writes (not what) raises: the disk or quota is full, the
# file system read-only, the directory not ours.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
WHICH = ("best", "last")

# The run facts write_run_config adds to the config; read_run_config takes them out again. "data" is
# optional: runs written before it was recorded lack it.
_RUN_KEYS = ("variant", "seed", "label_names")
_DATA_KEY = "data"
# How long a failed save waits for orbax's writer threads before removing what they wrote.
_WRITER_WAIT_S = 10.0
_TENSORSTORE_OS_ERROR = re.compile(r"os_error_code='(\d+)'")
# Written by orbax into a step as the last thing before the step counts as committed.
_COMMIT_MARKER = "commit_success.txt"

_logger = logging.getLogger(__name__)


def write_run_config(
  run_dir: str, config, *, variant: str, seed: int, label_names: list[str], data: dict | None = None
) -> None:
  """Writes ``RUN/config.json``: everything needed to rebuild the model and encode texts like training.

  Args:
    run_dir: The run directory; created if missing.
    config: The run's ``ml_collections.ConfigDict`` (or a plain mapping).
    variant: The model variant (a key of ``models.VARIANTS``).
    seed: The run's seed.
    label_names: The class names, label id order: ``label_names[i]`` is the name of label ``i``.
    data: The data's identity (`seqclf.run_identity.data_identity`), which a resume is held against.
  """
  document = json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)
  document.update(variant=variant, seed=int(seed), label_names=list(label_names))
  if data is not None:
    document[_DATA_KEY] = data
  results.write_json_atomic(os.path.join(run_dir, CONFIG_FILE), document)


def read_run_config(run_dir: str) -> tuple[dict, str, int, list[str]]:
  """Reads what :func:`write_run_config` wrote.

  Returns:
    ``(config, variant, seed, label_names)``; ``config`` is the config as a plain dict (without the
    data's identity: `read_run_data`).

  Raises:
    DataError: ``RUN/config.json`` is missing, unreadable, or lacks one of the run facts.
  """
  document = _read_config_document(run_dir)
  document.pop(_DATA_KEY, None)
  variant, seed, label_names = (document.pop(key) for key in _RUN_KEYS)
  return document, variant, seed, label_names


def read_run_data(run_dir: str) -> dict | None:
  """The data's identity :func:`write_run_config` recorded, or None for a run written without it."""
  return _read_config_document(run_dir).get(_DATA_KEY)


def _read_config_document(run_dir: str) -> dict:
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
  return document


def storage_cause(error: BaseException) -> OSError | None:
  """The `OSError` of a full, read-only or forbidden file system in ``error``'s chain (orbax wraps them),
  or None. Tensorstore, which writes orbax's arrays, raises a ValueError whose text carries the OS error
  code; it is given back as the `OSError` it stands for."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
      return error
    code = _tensorstore_errno(str(error)) if isinstance(error, ValueError) else None
    if code is not None:
      return OSError(code, os.strerror(code))
    error = error.__cause__ or error.__context__
  return None


def _tensorstore_errno(text: str) -> int | None:
  """The storage errno in a tensorstore error's text (``... No space left on device [os_error_code='28']``)."""
  match = _TENSORSTORE_OS_ERROR.search(text)
  code = int(match.group(1)) if match else None
  return code if code in _STORAGE_ERRNOS else None


# What orbax's writer threads raise when they go on after a failed save: the event loop and executors the
# save closed under them, or the interpreter shutting down.
_SHUTDOWN_NOISE = (
  (RuntimeError, "Event loop is closed"),
  (RuntimeError, "cannot schedule new futures after shutdown"),
  (ImportError, "sys.meta_path is None"),
)


def _is_storage_noise(error: BaseException | None) -> bool:
  """Whether ``error`` is what orbax's writer threads and callbacks raise around a failed write: the
  write's own storage error, or `_SHUTDOWN_NOISE`."""
  if error is None:
    return False
  return storage_cause(error) is not None or any(
    isinstance(error, kind) and text in str(error) for kind, text in _SHUTDOWN_NOISE
  )


class _HideStorageNoise(logging.Filter):
  """Drops the error records orbax, tensorstore and asyncio log about a failed write of a full or
  read-only disk: the save's own exception becomes the one line that says it."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    error = record.exc_info[1] if record.exc_info else None
    return not (_tensorstore_errno(record.getMessage()) is not None or _is_storage_noise(error))


class _MainThreadOnly:
  """``sys.stderr`` less what any other thread writes."""

  def __init__(self, stream):
    self._stream = stream

  def _drops(self) -> bool:
    return threading.current_thread() is not threading.main_thread()

  def write(self, text: str) -> int:
    return len(text) if self._drops() else self._stream.write(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


class _QuietWriterThreads(_MainThreadOnly):
  """``sys.stderr`` less what other threads print from native code: the tracebacks tensorstore prints
  when a write it finishes after a failed save calls back into the event loop the save closed."""

  def _drops(self) -> bool:
    try:
      sys._getframe(2)  # the caller of write()
    except ValueError:  # no Python caller: native code writing
      return super()._drops()
    return False


@contextlib.contextmanager
def _storage_noise_hidden():
  """Silences the storage noise of a save (`_HideStorageNoise`, `_QuietWriterThreads`); after a failed
  save it stays silenced for the rest of the process, whose stray writer threads go on failing while the
  error line is printed and the process exits."""
  loggers = [logging.getLogger("absl"), logging.getLogger("asyncio")]  # orbax logs through absl
  hide, stderr = _HideStorageNoise(), sys.stderr
  for logger in loggers:
    logger.addFilter(hide)
  sys.stderr = _QuietWriterThreads(stderr)
  try:
    yield
  except BaseException as error:
    if storage_cause(error) is None:
      _restore(loggers, hide, stderr)
    raise
  _restore(loggers, hide, stderr)


@contextlib.contextmanager
def _abandoned_reads_quiet():
  """While a checkpoint is read, and for the rest of the process once a read failed: when one array of a
  damaged checkpoint cannot be read, orbax closes its event loop while tensorstore's threads still finish
  the other reads, and their callbacks into the closed loop print tracebacks from native code (in some
  runs, around the error line that already says it, part of a traceback with a Python frame under it);
  `_MainThreadOnly` drops them."""
  stderr = sys.stderr
  sys.stderr = _MainThreadOnly(stderr)
  yield  # an exception leaves it installed: the abandoned reads may still be running
  sys.stderr = stderr


def _restore(loggers, hide, stderr) -> None:
  for logger in loggers:
    logger.removeFilter(hide)
  sys.stderr = stderr


class _DropAbandonedReads:
  """A `sys.unraisablehook` that drops what orbax's abandoned reads raise, passing the rest on.

  When one array of a damaged checkpoint cannot be read, orbax stops waiting for the others; their
  coroutines, still pending, are closed when collected (often at exit, after the event loop closed), and
  each prints a traceback of the same damage ("Event loop is closed" on top of the read error) after the
  error line that already says it.
  """

  def __init__(self, hook):
    self.hook = hook

  def __call__(self, unraisable) -> None:
    if not inspect.iscoroutine(unraisable.object):
      self.hook(unraisable)


def _silence_abandoned_reads() -> None:
  """Installs `_DropAbandonedReads` for the rest of the process (once)."""
  if not isinstance(sys.unraisablehook, _DropAbandonedReads):
    sys.unraisablehook = _DropAbandonedReads(sys.unraisablehook)


def describe_os_error(error: OSError) -> str:
  """``No space left on device: /path``: the reason first, then the file, for an error line."""
  reason = error.strerror or str(error)
  return f"{reason}: {error.filename}" if error.filename else reason


def complete_epochs(run_dir: str) -> list[int]:
  """The epochs with a complete checkpoint in ``run_dir``, read from the directory alone (no orbax)."""
  directory = os.path.join(run_dir, CHECKPOINT_DIR)
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(
    int(name)
    for name in names
    if name.isdigit() and os.path.exists(os.path.join(directory, name, _COMMIT_MARKER))
  )


def resume_hint(run_dir: str) -> str:
  """What is safely on disk in ``run_dir``, and how to go on: the tail of an error or interrupt line."""
  epochs = complete_epochs(run_dir)
  if not epochs:
    return f"no epoch of {run_dir} is saved yet; the same command starts it again"
  return f"epoch {epochs[-1]} is safely saved in {run_dir}; run the same command again to resume after it"


def check_run_dir(run_dir: str) -> None:
  """Refuses a run directory path that cannot be one: a file, or below a file.

  Raises:
    ConfigError: It names the path and the fix.
  """
  path = run_dir
  while path and not os.path.exists(path):
    path = os.path.dirname(path.rstrip(os.sep))
  if path and not os.path.isdir(path):
    raise ConfigError(
      f"--workdir={run_dir}: {path} is a file, not a directory; pass a directory (a new one, or a run's "
      "to resume it)"
    )


class RunLock:
  """One process per run directory: an advisory `fcntl.flock` on ``RUN/.lock``, which holds the PID.

  The kernel releases the lock when the process ends however it ends (a SIGKILL too), so a lock is never
  stale; the file stays (deleting a lock file races with a process opening it).
  """

  def __init__(self, run_dir: str):
    path = os.path.join(run_dir, LOCK_FILE)
    check_run_dir(run_dir)
    try:
      os.makedirs(run_dir, exist_ok=True)
      self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
      raise StorageError(
        f"cannot create the run directory lock ({describe_os_error(error)}): pass a writable --workdir"
      ) from error
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
      os.close(self._fd)
      raise BusyError(
        f"{run_dir} is in use by process {holder} (it holds {path}); wait for it to finish or stop it, "
        "or pass another --workdir"
      ) from None
    try:
      os.ftruncate(self._fd, 0)
      os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
      pass  # the lock holds without the PID; a second process then names the holder "unknown"

  def __enter__(self) -> "RunLock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the last descriptor releases the flock
      self._fd = None


def _rank(metric: float, epoch: int) -> tuple:
  """How a checkpoint ranks, higher is better. Of equal metrics the earlier epoch: early stopping counts
  from the first epoch that reached the best accuracy (only a better one resets it, as in Keras), so that
  is the best. Among epochs without a metric (-inf), the last. Checkpoints saved without their epoch among
  the metrics (0) rank ties by orbax's stable sort, the later."""
  return (metric, -epoch if metric > float("-inf") else epoch)


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
    metric_of = lambda metrics: _rank(metrics["metric"], metrics.get("epoch", 0))
    options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False,  # a save is on disk when save() returns: safe against SIGKILL
      create=writable,
      cleanup_tmp_directories=writable,
      best_fn=metric_of,
      best_mode="max",
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
        [
          ocp.checkpoint_managers.LatestN(n=1),
          # Keeps the highest metric_of: BestN sorts ascending and keeps the tail.
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
    self._save_failed = False
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    except OSError as error:
      if storage_cause(error) is None:
        raise
      raise StorageError(
        f"cannot open {self.directory} ({describe_os_error(error)}): free space or make it writable"
      ) from error

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    try:
      self._manager.close()
    except Exception:
      if not self._save_failed:  # after a failed save the manager may fail again; the save's error counts
        raise

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
    """The complete checkpoint that ranks highest (`_rank`: the highest metric, of equal ones the
    earlier epoch), or None."""
    return max(
      self.epochs(), key=lambda epoch: _rank(self._manager.metrics(epoch)["metric"], epoch), default=None
    )

  def save(self, epoch: int, state, *, history: list[dict], metric: float | None) -> None:
    """Saves the state after ``epoch``, then deletes checkpoints that are neither the last nor the best.

    Args:
      epoch: The epoch just finished (1-based); it names the checkpoint.
      state: The `train.TrainState` after that epoch.
      history: The per-epoch metric dicts so far (JSON-serialisable), returned again on restore.
      metric: The value that ranks checkpoints, higher is better (e.g. validation accuracy; of equal ones
        the earlier epoch); None ranks this epoch below every epoch that has one.

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
    try:
      with _storage_noise_hidden():
        self._manager.save(
          epoch,
          args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            optimizer=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave({"epoch": epoch, "step": int(state.step), "history": history}),
          ),
          # -inf rather than no metrics: orbax warns on every save without them.
          metrics={"metric": float("-inf") if metric is None else float(metric), "epoch": epoch},
          force=True,  # the epoch check above replaces orbax's save-interval policy
        )
    except Exception as error:
      cause = storage_cause(error)
      if cause is None:
        raise
      self._save_failed = True
      left = self._remove_partial_save(epoch)
      run_dir = os.path.dirname(self.directory)
      leftover = f" ({', '.join(left)} is left half-written; the next run removes it)" if left else ""
      raise StorageError(
        f"cannot save the checkpoint of epoch {epoch} ({describe_os_error(cause)}){leftover}; "
        f"{resume_hint(run_dir)} once the disk has room (or is writable)"
      ) from error

  def _remove_partial_save(self, epoch: int) -> list[str]:
    """Deletes what a failed save of ``epoch`` left (orbax's temporary directory, or the step without
    its commit marker), so the disk gets its space back and nothing half-written remains.

    Orbax's writer threads may go on writing into it after the save raised: they are waited for first
    (`_WRITER_WAIT_S` at most), and the removal is tried again while something reappears.

    Returns:
      The paths that could not be removed (a writer still at work), for the error line.
    """
    deadline = time.monotonic() + _WRITER_WAIT_S
    for thread in threading.enumerate():
      if type(thread).__name__ == "_SignalingThread" and thread is not threading.current_thread():
        try:
          thread.join(max(0.0, deadline - time.monotonic()))
        except Exception:  # orbax's join raises what the thread raised: the same failed write
          pass
    for _ in range(3):
      for path in self._partial_paths(epoch):
        shutil.rmtree(path, ignore_errors=True)
      time.sleep(0.2)  # then look again: a late write may have recreated it
      left = self._partial_paths(epoch)
      if not left:
        break
    return left

  def _partial_paths(self, epoch: int) -> list[str]:
    """Orbax's temporary directories of ``epoch``, and its step directory if it lacks the commit marker."""
    return [
      os.path.join(self.directory, name)
      for name in os.listdir(self.directory)
      if name.startswith(f"{epoch}.orbax-checkpoint-tmp")
      or (name == str(epoch) and not os.path.exists(os.path.join(self.directory, name, _COMMIT_MARKER)))
    ]

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
    # A run being trained deletes the checkpoint that stops being the last or the best right after each
    # save: one that vanishes while it is read is looked up again, not reported damaged.
    for attempt in range(3):
      epoch = self.best_epoch() if which == "best" else self.latest_epoch()
      if epoch is None:
        raise DataError(f"no complete checkpoint in {self.directory}: train the run (at least one epoch)")
      try:
        with _abandoned_reads_quiet():
          restored = self._manager.restore(epoch, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
      except Exception as error:
        if os.path.isdir(os.path.join(self.directory, str(epoch))) or attempt == 2:
          raise self._damaged(epoch, error) from error
        self._manager.reload()
        continue
      return restored["params"]

  def _damaged(self, epoch: int, error: Exception) -> DamagedCheckpointError:
    """The one-line error for checkpoint ``epoch`` that cannot be read, with the way out."""
    others = [e for e in self.epochs() if e != epoch]
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    path = os.path.join(self.directory, str(epoch))
    _silence_abandoned_reads()
    fix = (
      f"move it away (e.g. mv {path} {path}.damaged) to go on from epoch {others[-1]}"
      if others
      else "train in a fresh --workdir"
    )
    return DamagedCheckpointError(
      f"checkpoint {path} is damaged and cannot be read ({type(error).__name__}: {reason[:200]}): {fix}"
    )

  def _restore(self, epoch: int | None, target_state):
    if epoch is None:
      return None
    # Checked first because orbax reports a shape mismatch only midway through reading the arrays.
    try:
      stored = self._manager.item_metadata(epoch)["params"].tree
    except Exception as error:
      raise self._damaged(epoch, error) from error
    mismatch = describe_shape_mismatch(stored, target_state.params)
    if mismatch:
      raise DataError(
        f"checkpoint {self.directory}/{epoch} holds another model ({mismatch}): train in a "
        "fresh run directory, or with the config it was trained with"
      )
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    try:
      with _abandoned_reads_quiet():
        restored = self._manager.restore(
          epoch,
          args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(target_state.params)),
            optimizer=ocp.args.StandardRestore(abstract(target_state.opt_state)),
            meta=ocp.args.JsonRestore(),
          ),
        )
    except ValueError as error:  # same parameters, another optimizer (e.g. gradient clipping toggled)
      if _other_tree(error):
        raise DataError(
          f"checkpoint {self.directory}/{epoch} holds another optimizer state "
          f"({str(error).splitlines()[0]}): train in a fresh run directory, or with the config "
          "it was trained with"
        ) from error
      raise self._damaged(epoch, error) from error
    except Exception as error:
      raise self._damaged(epoch, error) from error
    meta = restored["meta"]
    if not isinstance(meta, dict) or not {"epoch", "step", "history"} <= set(meta):
      raise self._damaged(epoch, ValueError(f"meta holds {meta!r:.80}"))
    step = meta["step"]
    if isinstance(target_state.step, jax.Array):  # placed like the target's, e.g. replicated over a mesh
      step = jax.device_put(step, target_state.step.sharding)
    state = target_state.replace(params=restored["params"], opt_state=restored["optimizer"], step=step)
    return state, meta["epoch"], meta["history"]


def restore_params(run_dir: str, which: str = "best"):
  """The parameters of a run's best or last checkpoint, for prediction (see `Checkpointer.restore_params`)."""
  with Checkpointer(run_dir, writable=False) as checkpointer:
    return checkpointer.restore_params(which)


def _other_tree(error: ValueError) -> bool:
  """Whether orbax's ValueError says the stored tree differs from the target's (another optimizer), as
  opposed to a damaged file."""
  text = str(error).lower()
  return "tree" in text or "structure" in text or "mismatch" in text


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

"""Where training curves go: TensorBoard event files and JSON lines, behind one small interface.

TensorFlow-free on purpose: clu's writers import TensorFlow, which seqclf does not depend on. TensorBoard
files are written with tensorboardX, the optional extra ``tensorboard``: without it `create_default_writer`
writes JSON lines alone and says so.

  writer = create_default_writer("runs/article/logs/lstm-fused-seed0")
  writer.write_hparams({"variant": "lstm", "seed": 0, **config.to_dict()})
  writer.write_scalars(metrics.epoch, epoch_scalars(metrics))
  writer.close()
"""

import json
import os
import struct
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from absl import logging

from seqclf import optional, results
from seqclf.atomic import write_atomically
from seqclf.errors import UsageError

# File names inside a run's log directory.
JSONL_NAME = "metrics.jsonl"
HPARAMS_JSON_NAME = "hparams.json"


class MetricWriter(Protocol):
  """Receives a run's hyper-parameters once and its scalars at each step."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None: ...

  def written(self) -> set[tuple[int, str]]:
    """The (step, scalar name) pairs already on disk, from this and earlier writers of the directory."""
    ...

  def drop_after(self, step: int) -> None:
    """Removes what was written for steps after ``step``."""

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def flush(self) -> None: ...

  def close(self) -> None: ...


def epoch_scalars(metrics) -> dict[str, float]:
  """Scalar names for one epoch's `seqclf.train.EpochMetrics` (the step is ``metrics.epoch``)."""
  return {
    "train/loss": metrics.train_loss,
    "train/accuracy": metrics.train_acc,
    "test/loss": metrics.test_loss,
    "test/accuracy": metrics.test_acc,
    "time/epoch_s": metrics.epoch_s,
    "time/examples_per_s": metrics.examples_per_s,
    "time/eval_s": metrics.eval_s,
  }


def flatten_hparams(hparams: Mapping[str, Any], prefix: str = "") -> dict[str, str | bool | int | float]:
  """Nested mappings become dotted keys ("model.engine"); values TensorBoard cannot show become strings."""
  flat = {}
  for key, value in hparams.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_hparams(value, prefix=name + "."))
    elif isinstance(value, (str, bool, int, float)):
      flat[name] = value
    else:
      flat[name] = str(value)
  return flat


class JsonlWriter:
  """One JSON object per line and step, ``{"step": ..., **scalars}``, flushed line by line; appends, so a
  resumed run continues its file.

  Hyper-parameters go to ``hparams.json`` next to the lines file, so every line stays a step.
  """

  def __init__(self, path: str):
    self.path = path
    self.hparams_path = os.path.join(os.path.dirname(os.path.abspath(path)), HPARAMS_JSON_NAME)
    try:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      _drop_torn_line(path)
      self._file = open(path, "a")
    except OSError as e:
      raise UsageError(f"cannot write metrics to {path}: {e.strerror}; pass a writable directory") from e

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._file.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self._file.flush()  # a crashed or killed run keeps every finished step

  def written(self) -> set[tuple[int, str]]:
    self._file.flush()
    with open(self.path) as file:
      lines = file.read().splitlines()
    pairs = set()
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and isinstance(row.get("step"), int):
        pairs |= {(row["step"], name) for name in row if name != "step"}
    return pairs

  def drop_after(self, step: int) -> None:
    self._file.flush()
    with open(self.path, "rb") as file:
      lines = file.read().splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is None or _step_of(line) <= step]
    if kept != lines:
      self._file.close()
      write_atomically(self.path, lambda file: file.writelines(kept))
      self._file = open(self.path, "a")

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    results.write_json_atomic(self.hparams_path, json.loads(json.dumps(hparams, default=str)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """TensorBoard event files in ``logdir``: scalars, and hparams for TensorBoard's HParams dashboard.

  Written synchronously with tensorboardX's `EventsWriter`, so a full disk raises here: its
  ``SummaryWriter`` writes from a thread that dies on the first failed write, after which every write
  blocks forever. Each writer has a file of its own (tensorboardX names files by the second, and a second
  writer within it would truncate the first's).
  """

  def __init__(self, logdir: str):
    optional.require("tensorboardX", "tensorboard", feature="TensorBoard logs")
    from tensorboardX.event_file_writer import EventsWriter

    self.logdir = logdir
    os.makedirs(logdir, exist_ok=True)
    self._events = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}.{uuid.uuid4().hex[:8]}")

  def _write(self, summary, step: int = 0) -> None:
    from tensorboardX.proto import event_pb2

    self._events.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    from tensorboardX import summary

    for name, value in scalars.items():
      self._write(summary.scalar(name, float(value)), int(step))

  def written(self) -> set[tuple[int, str]]:
    self._events.flush()
    return {
      (event.step, value.tag)
      for event in read_events(self.logdir)
      for value in event.summary.value
      if value.WhichOneof("value") == "simple_value"
    }

  def drop_after(self, step: int) -> None:
    """Rewrites the event files in ``logdir`` without the events of steps after ``step`` (records are
    copied byte for byte, their checksums with them). Called before this writer writes a step: its own
    file then holds nothing after any step, and is left as it is."""
    from tensorboardX.proto import event_pb2

    for name in sorted(os.listdir(self.logdir)):
      if not name.startswith("events.out.tfevents."):
        continue
      path = os.path.join(self.logdir, name)
      records = _records(path)
      kept = [record for record in records if event_pb2.Event.FromString(record[12:-4]).step <= step]
      if len(kept) != len(records):
        write_atomically(path, lambda file, kept=kept: file.writelines(kept))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes the session-start summary only, into this run's own directory.

    tensorboardX's ``add_hparams`` would write to a new sub-run and also pin the experiment's metric list;
    without that experiment summary TensorBoard infers the hyper-parameter domains from all runs and takes
    every scalar of the run as a metric, so the HParams table shows this run's curves' final values.
    """
    from tensorboardX import summary

    _, session_start, _ = summary.hparams(flatten_hparams(hparams), {})
    self._write(session_start)

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()


class MultiWriter:
  """Writes everything to each of ``writers``."""

  def __init__(self, writers: Iterable[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for writer in self.writers:
      writer.write_scalars(step, scalars)

  def written(self) -> set[tuple[int, str]]:
    """The pairs every writer has."""
    return set.intersection(*(writer.written() for writer in self.writers))

  def write_missing(self, scalars_by_step: Mapping[int, Mapping[str, float]]) -> None:
    """Writes each writer the scalars of ``scalars_by_step`` it lacks: after a run was stopped between
    saving an epoch and reporting it (or while reporting it), a resumed run reports that epoch once."""
    for writer in self.writers:
      written = writer.written()
      for step, scalars in sorted(scalars_by_step.items()):
        missing = {name: value for name, value in scalars.items() if (step, name) not in written}
        if missing:
          writer.write_scalars(step, missing)

  def drop_after(self, step: int) -> None:
    """Removes from every writer what was written for steps after ``step``: a run resumed from an older
    checkpoint than its logs reach (the last one moved away) trains those steps again, and reports them
    once."""
    for writer in self.writers:
      writer.drop_after(step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    for writer in self.writers:
      writer.write_hparams(hparams)

  def flush(self) -> None:
    for writer in self.writers:
      writer.flush()

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def _drop_torn_line(path: str) -> None:
  """Cuts an unfinished last line (a process killed while writing it) off the lines file ``path``, so
  the next line starts on a line of its own."""
  try:
    file = open(path, "rb+")
  except FileNotFoundError:
    return
  with file:
    size = file.seek(0, os.SEEK_END)
    start = max(0, size - 65536)
    file.seek(start)
    tail = file.read()
    if tail and not tail.endswith(b"\n"):
      file.truncate(start + tail.rfind(b"\n") + 1)


def _step_of(line: bytes) -> int | None:
  """The step of a metrics.jsonl line, or None for one that holds none."""
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row["step"] if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def _records(path: str) -> list[bytes]:
  """The records of a TensorBoard event file, each whole (length, its masked CRC, the bytes, their masked
  CRC); a record cut short (a killed writer) ends the file."""
  with open(path, "rb") as file:
    data = file.read()
  records, offset = [], 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack_from("<Q", data, offset)
    if offset + 12 + length + 4 > len(data):
      break
    records.append(data[offset : offset + 12 + length + 4])
    offset += 12 + length + 4
  return records


def read_events(logdir: str):
  """Every `Event` in the TensorBoard event files directly in ``logdir``, in file order; a record cut
  short (a killed writer) ends its file, a damaged one too. A reader without TensorFlow."""
  from tensorboardX.proto import event_pb2

  events = []
  for name in sorted(os.listdir(logdir)):
    if not name.startswith("events.out.tfevents."):
      continue
    for record in _records(os.path.join(logdir, name)):
      try:
        events.append(event_pb2.Event.FromString(record[12:-4]))
      except Exception:  # protobuf's DecodeError: a damaged record
        break
  return events


def tensorboard_available() -> bool:
  return optional.available("tensorboardX")


def create_default_writer(logdir: str, *, tensorboard: bool = True) -> MetricWriter:
  """``logdir/metrics.jsonl`` always, plus TensorBoard event files in ``logdir`` when asked and possible."""
  writers = [JsonlWriter(os.path.join(logdir, JSONL_NAME))]
  if tensorboard:
    if tensorboard_available():
      writers.append(TensorBoardWriter(logdir))
    else:
      logging.warning(
        "tensorboardX is not installed, writing %s only; pip install 'seqclf[tensorboard]' for TensorBoard files",
        os.path.join(logdir, JSONL_NAME),
      )
  return MultiWriter(writers)

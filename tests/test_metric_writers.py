"""`seqclf.metric_writers`: what lands in metrics.jsonl and in TensorBoard's event files."""

import errno
import json
import struct
import threading

import pytest

from seqclf import metric_writers
from seqclf.errors import UsageError
from seqclf.train import EpochMetrics
from tests import full_disk

METRICS = EpochMetrics(
  epoch=2,
  epoch_s=1.5,
  examples_per_s=1000.0,
  train_loss=0.5,
  train_acc=0.75,
  test_loss=0.625,
  test_acc=0.875,
  eval_s=0.25,
)


def read_events(logdir):
  """Every `Event` in the TFRecord event files under ``logdir``: a reader without TensorFlow.

  A record is: uint64 length, uint32 masked CRC of the length, ``length`` bytes, uint32 masked CRC of them.
  """
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2", reason="tensorboardX is not installed")
  from tensorboardX.crc32c import crc32c

  def masked_crc(data):
    crc = crc32c(data) & 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

  events = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      header = data[offset : offset + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack_from("<I", data, offset + 8)[0] == masked_crc(header)
      payload = data[offset + 12 : offset + 12 + length]
      assert struct.unpack_from("<I", data, offset + 12 + length)[0] == masked_crc(payload)
      events.append(event_pb2.Event.FromString(payload))
      offset += 12 + length + 4
  return events


def test_epoch_scalars_names_every_metric():
  assert metric_writers.epoch_scalars(METRICS) == {
    "train/loss": 0.5,
    "train/accuracy": 0.75,
    "test/loss": 0.625,
    "test/accuracy": 0.875,
    "time/epoch_s": 1.5,
    "time/examples_per_s": 1000.0,
    "time/eval_s": 0.25,
  }


def test_jsonl_writer_writes_one_line_per_step(tmp_path):
  writer = metric_writers.JsonlWriter(str(tmp_path / "run" / "metrics.jsonl"))
  writer.write_scalars(1, {"train/loss": 0.75})
  # Flushed per line: readable before close, as a killed run would leave it.
  assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text()) == {"step": 1, "train/loss": 0.75}
  writer.write_scalars(2, metric_writers.epoch_scalars(METRICS))
  writer.write_hparams({"variant": "lstm", "model": {"engine": "scan"}})
  writer.close()
  lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert lines[1] == {"step": 2, **metric_writers.epoch_scalars(METRICS)}
  assert json.loads((tmp_path / "run" / "hparams.json").read_text()) == {
    "variant": "lstm",
    "model": {"engine": "scan"},
  }


def test_jsonl_writer_refuses_unwritable_path(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UsageError, match="cannot write metrics"):
    metric_writers.JsonlWriter(str(blocker / "metrics.jsonl"))


def test_flatten_hparams_gives_dotted_tensorboard_values():
  assert metric_writers.flatten_hparams(
    {"seed": 0, "model": {"engine": "scan", "sizes": [1, 2]}, "clip": None, "on": True}
  ) == {"seed": 0, "model.engine": "scan", "model.sizes": "[1, 2]", "clip": "None", "on": True}


def test_tensorboard_event_file_holds_the_scalars_and_hparams(tmp_path):
  pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
  writer = metric_writers.TensorBoardWriter(str(tmp_path))
  writer.write_hparams({"variant": "lstm", "seed": 3, "model": {"lstm_features": 100}})
  writer.write_scalars(1, {"train/loss": 0.75, "test/accuracy": 0.5})
  writer.write_scalars(2, metric_writers.epoch_scalars(METRICS))
  writer.close()

  scalars = {
    (event.step, value.tag): value.simple_value
    for event in read_events(tmp_path)
    for value in event.summary.value
    if value.HasField("simple_value")
  }
  expected = {
    (1, "train/loss"): 0.75,
    (1, "test/accuracy"): 0.5,
    **{(2, name): value for name, value in metric_writers.epoch_scalars(METRICS).items()},
  }
  assert scalars == pytest.approx(expected)  # event files hold float32

  from tensorboardX.proto import plugin_hparams_pb2

  hparams_values = [
    value
    for event in read_events(tmp_path)
    for value in event.summary.value
    if value.metadata.plugin_data.plugin_name == "hparams"
  ]
  assert [value.tag for value in hparams_values] == ["_hparams_/session_start_info"]
  plugin_data = plugin_hparams_pb2.HParamsPluginData.FromString(
    hparams_values[0].metadata.plugin_data.content
  )
  session = plugin_data.session_start_info.hparams
  assert session["variant"].string_value == "lstm"
  assert session["seed"].number_value == 3
  assert session["model.lstm_features"].number_value == 100


def test_default_writer_writes_jsonl_and_tensorboard(tmp_path):
  pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
  writer = metric_writers.create_default_writer(str(tmp_path / "run"))
  writer.write_hparams({"variant": "cnn_lstm"})
  writer.write_scalars(METRICS.epoch, metric_writers.epoch_scalars(METRICS))
  writer.flush()
  writer.close()
  assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["test/accuracy"] == 0.875
  assert json.loads((tmp_path / "run" / "hparams.json").read_text()) == {"variant": "cnn_lstm"}
  assert any(
    value.tag == "test/accuracy" for event in read_events(tmp_path / "run") for value in event.summary.value
  )


def test_default_writer_without_tensorboard_writes_jsonl_only(tmp_path):
  writer = metric_writers.create_default_writer(str(tmp_path), tensorboard=False)
  writer.write_scalars(1, {"train/loss": 1.0})
  writer.close()
  assert (tmp_path / "metrics.jsonl").exists()
  assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_write_missing_reports_each_epoch_once_per_writer(tmp_path):
  """A run stopped between saving an epoch and reporting it (or halfway through the report) gets every
  epoch once in metrics.jsonl and TensorBoard when resumed: it lost the epoch for good."""
  pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
  scalars = {step: {"train/loss": 1.0 / step, "test/accuracy": 0.5} for step in (1, 2, 3)}
  first = metric_writers.create_default_writer(str(tmp_path))
  first.write_scalars(1, scalars[1])
  first.writers[1].write_scalars(2, {"train/loss": 0.5})  # TensorBoard got part of epoch 2, JSONL none
  first.close()
  with open(tmp_path / metric_writers.JSONL_NAME, "a") as file:
    file.write('{"step": 2, "train/lo')  # a line cut short by a kill
  resumed = metric_writers.create_default_writer(str(tmp_path))
  resumed.write_missing(scalars)
  resumed.close()
  lines = [json.loads(line) for line in (tmp_path / metric_writers.JSONL_NAME).read_text().splitlines()]
  assert lines == [{"step": step, **scalars[step]} for step in (1, 2, 3)]
  pairs = [(e.step, v.tag) for e in read_events(tmp_path) for v in e.summary.value if v.tag in scalars[1]]
  assert sorted(pairs) == sorted((step, tag) for step in (1, 2, 3) for tag in scalars[1])


def test_drop_after_lets_a_resume_report_the_steps_it_trains_again_once(tmp_path):
  """A run resumed from the checkpoint before its last (moved away as damaged) logged the epoch it
  trained again a second time: metrics.jsonl held steps [1, 2, 3, 3]."""
  pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
  first = metric_writers.create_default_writer(str(tmp_path))
  first.write_hparams({"variant": "lstm"})
  for step in (1, 2, 3):
    first.write_scalars(step, {"train/loss": 1.0 / step})
  first.close()
  resumed = metric_writers.create_default_writer(str(tmp_path))
  resumed.write_hparams({"variant": "lstm"})
  resumed.drop_after(2)
  resumed.write_scalars(3, {"train/loss": 0.25})
  resumed.close()
  lines = [json.loads(line) for line in (tmp_path / metric_writers.JSONL_NAME).read_text().splitlines()]
  assert lines == [
    {"step": 1, "train/loss": 1.0},
    {"step": 2, "train/loss": 0.5},
    {"step": 3, "train/loss": 0.25},
  ]
  losses = [
    (e.step, v.simple_value) for e in read_events(tmp_path) for v in e.summary.value if v.tag == "train/loss"
  ]
  assert sorted(losses) == [(1, 1.0), (2, 0.5), (3, 0.25)]
  assert (
    sum(v.tag == "_hparams_/session_start_info" for e in read_events(tmp_path) for v in e.summary.value) == 2
  )


def test_a_full_disk_raises_from_the_tensorboard_writer_instead_of_hanging(tmp_path):
  """tensorboardX's writer thread died on the full disk and the next writes blocked forever."""
  pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
  with full_disk.small_tmpfs(tmp_path / "disk", size="64k") as disk:
    writer = metric_writers.TensorBoardWriter(str(disk / "logs"))
    writer.flush()
    full_disk.fill(disk / "filler")
    outcome = []

    def write():
      try:
        for step in range(1, 2000):  # more than a page of events, flushed or not
          writer.write_scalars(step, {"train/loss": 1.0, "test/accuracy": 0.5})
        writer.flush()
      except OSError as error:
        outcome.append(error.errno)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert outcome == [errno.ENOSPC]
    (disk / "filler").unlink()
    writer.close()

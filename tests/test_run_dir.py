"""A run directory under faults: refused configs write nothing, one process per directory, a full disk,
a damaged checkpoint and Ctrl-C each end in one line that says what is safe and how to go on."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from seqclf import checkpoint
from seqclf.errors import BusyError
from tests import drivers
from tests.test_main import REPO, main_command, run_main, write_topics_csv

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
  return write_topics_csv(tmp_path_factory.mktemp("data") / "train.csv", 60)


def one_error_line(result, code=2, prefix="error: "):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == code, (result.returncode, result.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize(
  "override,words",
  [
    ("--config.model.lstm_features=0", "lstm_features must be an integer >= 1"),
    ("--config.model.engine=bogus", "unknown LSTM engine 'bogus'"),
    ("--config.num_buckets=100", "num_buckets must be in 0..8"),
    ("--config.model.matmul_precision=float64", "matmul_precision must be one of"),
  ],
)
def test_a_refused_config_writes_nothing(train_file, tmp_path, override, words):
  """Refused after config.json and vocab.json were written, the next correct command was refused too."""
  result = run_main(tmp_path / "run", train_file, "--config.val_fraction=0.2", override)
  assert words in one_error_line(result)
  assert not (tmp_path / "run").exists()


def test_a_second_process_on_the_run_directory_is_refused_with_the_holders_pid(train_file, tmp_path):
  workdir = tmp_path / "run"
  with checkpoint.RunLock(str(workdir)):
    result = run_main(workdir, train_file, "--config.val_fraction=0.2")
  line = one_error_line(result)
  assert f"in use by process {os.getpid()}" in line and "another --workdir" in line
  assert sorted(os.listdir(workdir)) == [checkpoint.LOCK_FILE]  # nothing of the refused run


def test_the_lock_dies_with_its_process(tmp_path):
  """A SIGKILLed holder leaves no stale lock: the kernel releases it."""
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      f"from seqclf import checkpoint; checkpoint.RunLock({str(tmp_path)!r}); print(1); input()",
    ],
    cwd=REPO,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline().strip() == "1"
  with pytest.raises(BusyError, match=f"process {holder.pid}"):
    checkpoint.RunLock(str(tmp_path))
  holder.kill()
  holder.wait(timeout=30)
  checkpoint.RunLock(str(tmp_path)).release()


def test_resuming_with_another_engine_and_precision_is_allowed_but_not_another_size(train_file, tmp_path):
  workdir = tmp_path / "run"
  first = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.model.engine=scan")
  assert first.returncode == 0, first.stderr
  resumed = run_main(
    workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=2", "--config.model.engine=fused"
  )
  assert resumed.returncode == 0, resumed.stderr
  assert "epoch 1/" not in resumed.stdout and "epoch 2/" in resumed.stdout
  assert json.loads((workdir / "config.json").read_text())["model"]["engine"] == "fused"
  refused = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.model.lstm_features=7")
  assert "was trained with model.lstm_features=12, not 7" in one_error_line(refused)


# A fault-injecting writer: orbax's rename of a finished save to its step fails as on a full disk, for one
# epoch, leaving the temporary directory behind as a real ENOSPC does.
FULL_DISK_AT_EPOCH_2 = textwrap.dedent(
  """
  import errno, os, sys
  rename = os.rename
  def full_disk(source, target, *args, **kwargs):
    if "orbax-checkpoint-tmp" in str(source) and os.path.basename(str(target)) == "2":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return rename(source, target, *args, **kwargs)
  os.rename = full_disk
  from seqclf import main
  sys.argv = ["seqclf.main", *sys.argv[1:]]
  main.run()
  """
)


def test_a_full_disk_during_a_save_stops_with_one_line_and_loses_nothing(train_file, tmp_path):
  workdir = tmp_path / "run"
  args = main_command(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=3")[3:]
  result = drivers.run("seqclf.main", *args, code=FULL_DISK_AT_EPOCH_2)
  line = one_error_line(result)
  assert "cannot save the checkpoint of epoch 2 (No space left on device" in line
  assert "epoch 1 is safely saved" in line and "run the same command again" in line
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]  # no temporary directory left
  resumed = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=3")
  assert resumed.returncode == 0, resumed.stderr
  assert "epoch 1/" not in resumed.stdout and "epoch 3/" in resumed.stdout


def test_an_unwritable_run_directory_is_one_line(train_file, tmp_path):
  if os.geteuid() == 0:
    pytest.skip("root writes into read-only directories")
  tmp_path.chmod(0o500)
  try:
    result = run_main(tmp_path / "run", train_file, "--config.val_fraction=0.2")
  finally:
    tmp_path.chmod(0o700)
  assert "pass a writable --workdir" in one_error_line(result)


@pytest.fixture(scope="module")
def two_epochs(train_file, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained") / "run"
  result = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=2")
  assert result.returncode == 0, result.stderr
  return workdir


def _damage(workdir, tmp_path, how):
  import shutil

  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  last = copy / "checkpoints" / str(checkpoint.complete_epochs(str(copy))[-1])
  if how == "params deleted":
    shutil.rmtree(last / "params")
  else:
    for path in (last / "params").rglob("*"):
      if path.is_file():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
  return copy, last


@pytest.mark.parametrize("how", ["params deleted", "files truncated"])
def test_a_damaged_checkpoint_is_named_on_resume_and_predict(two_epochs, train_file, tmp_path, how):
  """It gave 44-190 lines of traceback and exit 1."""
  workdir, last = _damage(two_epochs, tmp_path, how)
  # The fix names the intact checkpoint to go on from where there is one, else a fresh run directory.
  others = [e for e in checkpoint.complete_epochs(str(workdir)) if str(e) != last.name]
  fix = f"mv {last} {last}.damaged" if others else "train in a fresh --workdir"
  resumed = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=3")
  line = one_error_line(resumed)
  assert f"checkpoint {last} is damaged" in line and fix in line
  predicted = drivers.run("seqclf.predict", f"--workdir={workdir}", "--which=last", "goal match")
  assert f"checkpoint {last} is damaged" in one_error_line(predicted)


def test_following_the_advice_for_a_damaged_checkpoint_logs_each_epoch_once(two_epochs, train_file, tmp_path):
  """Resumed after its last checkpoint was moved away, metrics.jsonl held the epochs trained again twice."""
  workdir, last = _damage(two_epochs, tmp_path, "params deleted")
  last.rename(f"{last}.damaged")
  resumed = run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=2")
  assert resumed.returncode == 0, resumed.stderr
  lines = (workdir / "logs" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_ctrl_c_says_how_to_resume_and_exits_130(train_file, tmp_path):
  workdir = tmp_path / "run"
  process = subprocess.Popen(
    main_command(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=100000"),
    cwd=REPO,
    env=ENV,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=drivers.interruptible,
  )
  for line in process.stdout:
    if line.startswith("epoch 2/"):
      break
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("interrupted: "), stderr
  assert "is safely saved in" in lines[0] and "run the same command again to resume" in lines[0]
  assert "Traceback" not in stderr


def test_storage_errors_are_found_inside_wrapped_exceptions():
  inner = OSError(errno.EROFS, "Read-only file system", "/x")
  try:
    try:
      raise inner
    except OSError as error:
      raise RuntimeError("orbax failed") from error
  except RuntimeError as wrapped:
    assert checkpoint.storage_cause(wrapped) is inner
  assert checkpoint.storage_cause(ValueError("no")) is None
  assert checkpoint.describe_os_error(inner) == "Read-only file system: /x"


def test_predict_reads_the_last_complete_checkpoint_while_a_save_is_under_way(two_epochs, tmp_path):
  """What a save in progress looks like on disk: a temporary directory, or a step without its marker."""
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(two_epochs, workdir)
  (workdir / "checkpoints" / "3.orbax-checkpoint-tmp-123").mkdir()
  (workdir / "checkpoints" / "4").mkdir()  # renamed, commit marker not yet written
  with checkpoint.Checkpointer(str(workdir), writable=False) as reader:
    assert reader.latest_epoch() == 2
  assert checkpoint.restore_params(str(workdir), "last")["head"]["kernel"].shape[0] == 12
  assert pathlib.Path(workdir / "checkpoints" / "4").exists()  # a reader removes nothing


def test_predict_looks_again_when_the_checkpoint_it_reads_is_deleted_by_the_trainer(two_epochs, tmp_path):
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(two_epochs, workdir)
  last = checkpoint.complete_epochs(str(workdir))[-1]
  newer = workdir / "checkpoints" / str(last + 1)
  shutil.copytree(workdir / "checkpoints" / str(last), newer)  # a second complete checkpoint
  with checkpoint.Checkpointer(str(workdir), writable=False) as reader:
    restore = reader._manager.restore

    def deleted_while_read(epoch, *args, **kwargs):
      if epoch == last + 1:  # the trainer's clean-up removes it under the reader
        shutil.rmtree(newer)
        raise FileNotFoundError(f"{newer}/params")
      return restore(epoch, *args, **kwargs)

    reader._manager.restore = deleted_while_read
    assert reader.restore_params("last")["head"]["kernel"].shape[0] == 12

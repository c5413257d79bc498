"""`seqclf.run_identity`: a run directory started again on other data, with fewer epochs or another
config is refused in one line naming what changed, and nothing in it is rewritten."""

import hashlib
import shutil

import numpy as np
import pytest
from ml_collections import ConfigDict

from seqclf import checkpoint, run_identity
from seqclf.data.encoding import Vocabulary
from seqclf.errors import ConfigError, DataError
from tests import drivers
from tests.test_main import main_command, run_main, write_topics_csv


def _identity(path, arrays=(np.arange(6, dtype=np.int32),)):
  source = run_identity.own_files_source(str(path), None, "text", "label")
  return run_identity.data_identity(source, arrays, Vocabulary.fit([["a", "b"]], 10))


def test_the_data_is_its_content_not_its_path(tmp_path):
  first = write_topics_csv(tmp_path / "train.csv", 20)
  moved = tmp_path / "elsewhere.csv"
  shutil.copy(first, moved)
  assert run_identity.data_changes(_identity(first), _identity(moved), ["a", "b"], ["a", "b"]) is None
  other = write_topics_csv(tmp_path / "other.csv", 20, seed=3)
  changed = run_identity.data_changes(
    _identity(first), _identity(other, (np.arange(7, dtype=np.int32),)), ["a", "b"], ["a", "b", "c"]
  )
  assert changed.startswith(f"--train_file (was {first}, ") and f"now {other}, " in changed
  assert changed.endswith("the classes (were a, b; now a, b, c)")
  # Same file, other arrays (another encoding of it): named as such.
  same_file = run_identity.data_changes(
    _identity(first), _identity(first, (np.arange(5, dtype=np.int32),)), ["a"], ["a"]
  )
  assert same_file.startswith("the encoded data")


def test_a_run_without_recorded_data_is_taken_as_it_is(tmp_path):
  config = ConfigDict({"epochs": 1, "variant": "lstm", "model": {"engine": "scan"}})
  checkpoint.write_run_config(str(tmp_path), config, variant="lstm", seed=0, label_names=["a", "b"])
  data = _identity(write_topics_csv(tmp_path / "train.csv", 20))
  run_identity.check_resumable(str(tmp_path), config, "lstm", 0, data=data, label_names=["a", "b"])
  checkpoint.write_run_config(
    str(tmp_path), config, variant="lstm", seed=0, label_names=["a", "b"], data=data
  )
  assert checkpoint.read_run_data(str(tmp_path)) == data
  with pytest.raises(DataError, match="the classes"):
    run_identity.check_resumable(str(tmp_path), config, "lstm", 0, data=data, label_names=["a", "c"])
  with pytest.raises(ConfigError, match="holds a run of variant 'lstm' seed 0"):
    run_identity.check_resumable(str(tmp_path), config, "lstm", 1)


def _files(workdir):
  """Every file of a run directory but its lock (which a refused process holds while it checks)."""
  return {
    str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(workdir.rglob("*"))
    if path.is_file() and path.name != checkpoint.LOCK_FILE
  }


def test_a_start_on_other_data_or_fewer_epochs_is_refused_and_rewrites_nothing(tmp_path):
  """A finished run given another train file exited 0 and rewrote vocab.json and config.json; with epochs
  left it trained on; another class count was refused only after config.json was rewritten; fewer epochs
  than trained exited 0, writing epochs: 1 beside two epochs of results. Another config key, refused
  before, still rewrites nothing."""
  train_file = write_topics_csv(tmp_path / "train.csv", 60)
  other = write_topics_csv(tmp_path / "other.csv", 60, seed=7)  # same classes, other texts
  two_classes = tmp_path / "two.csv"
  two_classes.write_text(
    "".join(line for line in train_file.read_text().splitlines(True) if ",tech" not in line)
  )
  workdir = tmp_path / "run"
  base = ("--config.val_fraction=0.2", "--config.epochs=2")
  assert run_main(workdir, train_file, *base).returncode == 0
  before = _files(workdir)
  cases = [
    (other, base, f"was trained on other data: --train_file (was {train_file}, "),
    (other, ("--config.val_fraction=0.2", "--config.epochs=3"), "was trained on other data: --train_file"),
    (two_classes, base, "the classes (were food, sport, tech; now food, sport)"),
    (train_file, ("--config.val_fraction=0.2", "--config.epochs=1"), "has 2 epochs trained, more than"),
    (train_file, (*base, "--config.maxlen=30"), "was trained with maxlen=24, not 30"),
  ]
  for data, args, words in cases:
    result = run_main(workdir, data, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0], lines[0]
    assert _files(workdir) == before, (data, args)


def test_a_file_trained_run_resumed_without_its_files_is_refused_before_imdb_is_read(tmp_path):
  """Resumed without --train_file, it fetched the IMDB data first: offline a download error, online 84 MB
  downloaded only to be refused."""
  train_file = write_topics_csv(tmp_path / "train.csv", 60)
  workdir = tmp_path / "run"
  assert run_main(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=1").returncode == 0
  before = _files(workdir)
  missing = tmp_path / "nowhere.tar.gz"  # read first, it would be reported missing
  args = main_command(
    workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=1", f"--imdb={missing}"
  )
  result = drivers.run("seqclf.main", *[arg for arg in args[3:] if not arg.startswith("--train_file=")])
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert f"the data source (was --train_file={train_file}, now IMDB from {missing})" in lines[0], lines[0]
  assert f"pass --train_file={train_file} --text_field=text --label_field=label to resume it" in lines[0]
  assert _files(workdir) == before

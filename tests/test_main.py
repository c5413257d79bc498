"""`seqclf.main`: own CSV data, validation and early stopping, and a SIGKILLed run resumed exactly."""

import collections
import csv
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from seqclf import checkpoint, metric_writers, models, predict
from tests import drivers, full_disk

REPO = pathlib.Path(__file__).resolve().parent.parent
TOPICS = {
  "sport": "goal match team score win",
  "food": "pasta taste cook dish spicy",
  "tech": "chip code laptop data cloud",
}


def write_topics_csv(path, rows, seed=0):
  rng = random.Random(seed)
  filler = "the a of and it was very".split()
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    for _ in range(rows):
      label = rng.choice(sorted(TOPICS))
      words = [rng.choice(filler) for _ in range(6)] + rng.sample(TOPICS[label].split(), 2)
      rng.shuffle(words)
      writer.writerow([" ".join(words), label])
  return path


def main_command(workdir, train_file, *extra):
  return [
    sys.executable,
    "-m",
    "seqclf.main",
    f"--workdir={workdir}",
    f"--train_file={train_file}",
    "--config=seqclf/configs/tiny.py",
    "--config.learning_rate=0.01",
    "--tensorboard=false",
    *extra,
  ]


def run_main(*args):
  return drivers.run("seqclf.main", *main_command(*args)[3:])


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
  root = tmp_path_factory.mktemp("topics")
  return write_topics_csv(root / "train.csv", 300), write_topics_csv(root / "test.csv", 90, seed=1)


def test_multiclass_csv_with_validation_split_then_predict(topics, tmp_path):
  """Both drivers in new interpreters, as a user starts them (``python -m``)."""
  train_file, test_file = topics
  workdir = tmp_path / "run"
  command = main_command(workdir, train_file, f"--test_file={test_file}", "--config.epochs=4")
  result = drivers.run_fresh("seqclf.main", *command[3:], "--config.val_fraction=0.2")
  assert result.returncode == 0, result.stderr
  record = json.loads((workdir / "results.json").read_text())["runs"][0]
  assert record["eval_split"] == "validation" and record["label_names"] == ["food", "sport", "tech"]
  assert record["final_test"]["test_acc"] >= 0.9
  assert all("validation_acc" in epoch and "test_acc" not in epoch for epoch in record["epochs"])
  predicted = drivers.run_fresh(
    "seqclf.predict", f"--workdir={workdir}", "--json", "the spicy pasta dish", "new laptop chip"
  )
  assert predicted.returncode == 0, predicted.stderr
  labels = [json.loads(line)["label"] for line in predicted.stdout.splitlines()]
  assert labels == ["food", "tech"]


def test_early_stopping_stops_when_validation_stalls(topics, tmp_path):
  result = run_main(
    tmp_path / "run", topics[0], "--config.epochs=30", "--config.val_fraction=0.2", "--config.patience=1"
  )
  assert result.returncode == 0, result.stderr
  record = json.loads((tmp_path / "run" / "results.json").read_text())["runs"][0]
  assert record["stopped_early"] and len(record["epochs"]) < 30
  last = len(record["epochs"])
  epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
  assert [line.split(":")[0] for line in epoch_lines] == [f"epoch {n}/30" for n in range(1, last + 1)]
  assert all(line.endswith(" left") for line in epoch_lines)
  stopped = [line for line in result.stdout.splitlines() if line.startswith("stopped early")]
  assert stopped == [
    f"stopped early after epoch {last}/30: no better validation accuracy in the last 1 epoch(s)"
    " (--config.patience=1)"
  ]


def test_dropout_rates_are_set_from_the_command_line(topics, tmp_path):
  result = run_main(
    tmp_path / "run",
    topics[0],
    f"--test_file={topics[1]}",
    "--config.model.output_dropout=0.5",
    "--variant=lstm_dropout",
  )
  assert result.returncode == 0, result.stderr
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["model"]["output_dropout"] == 0.5
  model = models.create("lstm_dropout", **config["model"])
  assert (model.output_dropout, model.embedding_dropout) == (
    0.5,
    models.VARIANTS["lstm_dropout"]["embedding_dropout"],
  )


def test_patience_without_validation_and_a_changed_config_are_refused(topics, tmp_path):
  result = run_main(tmp_path / "a", topics[0], "--config.patience=2")
  assert result.returncode == 2 and "val_fraction" in result.stderr and "Traceback" not in result.stderr
  assert run_main(tmp_path / "b", topics[0], "--config.epochs=1", "--config.val_fraction=0.2").returncode == 0
  changed = run_main(
    tmp_path / "b", topics[0], "--config.epochs=2", "--config.val_fraction=0.2", "--config.maxlen=30"
  )
  assert changed.returncode == 2 and "maxlen" in changed.stderr


def _final_state(workdir):
  record = json.loads((workdir / "results.json").read_text())["runs"][0]
  epochs = [
    {k: v for k, v in e.items() if k not in ("epoch_s", "examples_per_s", "eval_s")} for e in record["epochs"]
  ]
  return epochs, checkpoint.restore_params(str(workdir), "last")


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
  train_file = write_topics_csv(tmp_path / "big.csv", 4000)  # ~1000 steps an epoch: time to kill in it
  args = ("--config.epochs=3", "--config.mask=true", "--config.val_fraction=0.1")
  reference = run_main(tmp_path / "reference", train_file, *args)
  assert reference.returncode == 0, reference.stderr

  killed_dir = tmp_path / "killed"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  process = subprocess.Popen(
    main_command(killed_dir, train_file, *args),
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.DEVNULL,
    text=True,
    preexec_fn=drivers.interruptible,
  )
  for line in process.stdout:
    if line.startswith("epoch 1/"):
      break
  time.sleep(0.3)  # well inside epoch 2
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  with checkpoint.Checkpointer(str(killed_dir), writable=False) as checkpointer:
    assert checkpointer.latest_epoch() == 1, "the kill did not land in epoch 2"
  assert not (killed_dir / "results.json").exists()

  resumed = run_main(killed_dir, train_file, *args)
  assert resumed.returncode == 0, resumed.stderr
  assert "epoch 1/" not in resumed.stdout and "epoch 2/" in resumed.stdout  # it really resumed
  (epochs, params), (expected_epochs, expected_params) = (
    _final_state(killed_dir),
    _final_state(tmp_path / "reference"),
  )
  assert epochs == expected_epochs
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected_params)):
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


TINY_SIZES = (
  "--config.top_words=60",
  "--config.maxlen=24",
  "--config.model.embed_dim=8",
  "--config.model.lstm_features=12",
  "--config.batch_size=4",
  "--config.eval_batch_size=8",
  "--config.epochs=1",
)


def run_driver(*args):
  return drivers.run("seqclf.main", "--tensorboard=false", *args)


@pytest.mark.parametrize(
  "variant_args",
  [["--config=seqclf/configs/cnn_lstm.py"], ["--config=seqclf/configs/tiny.py", "--variant=cnn_lstm"]],
  ids=["a variant's config file", "the --variant shortcut"],
)
def test_the_variant_comes_from_the_config(variant_args, topics, tmp_path):
  workdir = tmp_path / "run"
  result = run_driver(
    f"--workdir={workdir}",
    f"--train_file={topics[0]}",
    f"--test_file={topics[1]}",
    *variant_args,
    *TINY_SIZES,
  )
  assert result.returncode == 0, result.stderr
  assert json.loads((workdir / "config.json").read_text())["variant"] == "cnn_lstm"
  assert json.loads((workdir / "results.json").read_text())["runs"][0]["variant"] == "cnn_lstm"


MAIN_BAD_INPUTS = [
  # (case, args after --workdir/--train_file, expected words in the one line)
  ("the article driver's config", ["--config=seqclf/configs/article_tiny.py"], "not a seqclf.main config"),
  (
    "shortcut and its config field",
    ["--config=seqclf/configs/tiny.py", "--variant=lstm", "--config.variant=cnn_lstm"],
    "--variant and --config.variant",
  ),
  ("unknown variant", ["--config=seqclf/configs/tiny.py", "--variant=rnn"], "rnn"),
  ("integer flag that is not a number", ["--config=seqclf/configs/tiny.py", "--seed=one"], "seed"),
  ("negative seed", ["--config=seqclf/configs/tiny.py", "--seed=-1"], "--seed takes integers from 0 to"),
  (
    "config field that is not a number",
    ["--config=seqclf/configs/tiny.py", "--config.val_fraction=a"],
    "val_fraction",
  ),
  (
    "IMDB flags beside a train file",
    ["--config=seqclf/configs/tiny.py", "--imdb=x.tar.gz"],
    "--train_file",
  ),
  ("a misspelled packaged config", ["--config=tinyy"], "or the name of a packaged config: article, "),
]


def test_own_data_flags_without_a_train_file_are_refused(tmp_path):
  result = run_driver(f"--workdir={tmp_path / 'run'}", "--config=seqclf/configs/tiny.py", "--text_field=body")
  assert result.returncode == 2 and result.stderr.startswith("error: --text_field describes an own dataset")


@pytest.mark.parametrize("case,args,expected", MAIN_BAD_INPUTS, ids=[c[0] for c in MAIN_BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_code_2(case, args, expected, tmp_path):
  train_file = write_topics_csv(tmp_path / "train.csv", 20)
  result = run_driver(f"--workdir={tmp_path / 'run'}", f"--train_file={train_file}", *args)
  assert result.returncode == 2, (case, result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
  assert not (tmp_path / "run" / "results.json").exists()


def _steps(workdir):
  """The steps in metrics.jsonl, in file order, and every (step, scalar) TensorBoard holds, counted."""
  lines = (workdir / "logs" / "metrics.jsonl").read_text().splitlines()
  events = metric_writers.read_events(str(workdir / "logs"))
  pairs = [
    (e.step, v.tag) for e in events for v in e.summary.value if v.WhichOneof("value") == "simple_value"
  ]
  return [json.loads(line)["step"] for line in lines], collections.Counter(pairs)


def _assert_every_epoch_reported_once(workdir, epochs):
  steps, tensorboard = _steps(workdir)
  assert steps == list(range(1, epochs + 1))
  assert sorted({step for step, _ in tensorboard}) == steps and set(tensorboard.values()) == {1}
  assert len(tensorboard) == 7 * epochs
  record = json.loads((workdir / "results.json").read_text())["runs"][0]
  assert [epoch["epoch"] for epoch in record["epochs"]] == steps


# Runs seqclf.main with checkpoint saves wrapped: right after the save of epoch 1 commits, the process
# sends itself a signal, before the epoch is reported.
SIGNAL_AFTER_COMMIT = textwrap.dedent(
  """
  import os, signal, sys
  from seqclf import checkpoint, main
  save, signal_number = checkpoint.Checkpointer.save, getattr(signal, sys.argv.pop(1))
  def save_then_signal(self, epoch, *args, **kwargs):
    save(self, epoch, *args, **kwargs)
    if epoch == 1:
      os.kill(os.getpid(), signal_number)
  checkpoint.Checkpointer.save = save_then_signal
  sys.argv = ["seqclf.main", *sys.argv[1:]]
  main.run()
  """
)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_a_signal_between_a_checkpoint_and_its_report_loses_no_metrics(signal_name, tmp_path):
  """The epoch whose checkpoint committed was missing from metrics.jsonl and TensorBoard for good."""
  train_file = write_topics_csv(tmp_path / "train.csv", 60)
  workdir = tmp_path / "run"
  args = main_command(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=2")
  args = [arg for arg in args[3:] if arg != "--tensorboard=false"]
  stopped = drivers.run("seqclf.main", signal_name, *args, code=SIGNAL_AFTER_COMMIT)
  assert stopped.returncode == (130 if signal_name == "SIGINT" else -signal.SIGKILL), stopped.stderr
  assert "epoch 1/" not in stopped.stdout and checkpoint.complete_epochs(str(workdir)) == [1]
  resumed = drivers.run("seqclf.main", *args)
  assert resumed.returncode == 0, resumed.stderr
  _assert_every_epoch_reported_once(workdir, 2)


@pytest.fixture
def small_disk(tmp_path):
  with full_disk.small_tmpfs(tmp_path / "disk") as disk:
    yield disk


# Runs seqclf.main and fills its disk (writing a file until ENOSPC) just before one write of the run.
FILL_DISK_BEFORE = textwrap.dedent(
  """
  import os, sys
  from seqclf import checkpoint, main, metric_writers, results
  from seqclf.data import encoding
  from tests import full_disk
  where, filler = sys.argv.pop(1), sys.argv.pop(1)
  # Room for the checkpoint's small files but not its arrays: where tensorstore, not Python, finds the
  # disk full.
  room = 12288 if where == "checkpoint" else 0
  def before(owner, name, when):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
      if when(*args) and not os.path.exists(filler):
        full_disk.fill(filler, room)
      return original(*args, **kwargs)
    setattr(owner, name, wrapped)
  hooks = {
    "config": (checkpoint, "write_run_config", lambda *a: True),
    "vocabulary": (encoding.Vocabulary, "save", lambda *a: True),
    "checkpoint": (checkpoint.Checkpointer, "save", lambda self, epoch, *a: epoch == 2),
    "metrics": (metric_writers.MultiWriter, "write_scalars", lambda self, step, *a: step == 1),
    "results": (results, "write_json_atomic", lambda path, *a: path.endswith("results.json")),
  }
  before(*hooks[where])
  sys.argv = ["seqclf.main", *sys.argv[1:]]
  main.run()
  """
)


@pytest.mark.parametrize("where", ["config", "vocabulary", "checkpoint", "metrics", "results"])
def test_a_full_disk_at_each_write_is_one_line_and_the_run_resumes(where, small_disk, tmp_path):
  """A full disk during a checkpoint gave 370-490 lines of orbax's traceback (tensorstore's ValueError)
  and left its temporary directory."""
  train_file = write_topics_csv(tmp_path / "train.csv", 60)
  workdir, filler = small_disk / "run", small_disk / "filler"
  args = main_command(workdir, train_file, "--config.val_fraction=0.2", "--config.epochs=2")
  args = [arg for arg in args[3:] if arg != "--tensorboard=false"]
  full = drivers.run("seqclf.main", where, str(filler), *args, code=FILL_DISK_BEFORE)
  lines = full.stderr.strip().splitlines()
  assert full.returncode == 2 and len(lines) == 1, full.stderr[-3000:]
  assert lines[0].startswith("error: cannot ") and "(No space left on device" in lines[0], lines[0]
  saved = checkpoint.complete_epochs(str(workdir))
  assert (f"epoch {saved[-1]} is safely saved" if saved else "no epoch of") in lines[0]
  leftovers = [path.name for path in small_disk.rglob("*") if "tmp" in path.name]
  assert not leftovers  # no temporary file or checkpoint directory
  if where in ("config", "vocabulary"):  # nothing trained yet: a resume is a fresh start
    return
  filler.unlink()
  resumed = drivers.run("seqclf.main", *args)
  assert resumed.returncode == 0, resumed.stderr
  _assert_every_epoch_reported_once(workdir, 2)
  assert predict.load(str(workdir)).predict(["goal match"])[0].label in TOPICS


@pytest.mark.parametrize("body", ["return 1 / 0", "raise KeyError('model')", "import no_such_module"])
def test_a_config_file_that_raises_is_named_with_its_line(body, tmp_path):
  """It read "cannot parse the command line", or for a KeyError "unknown config key"."""
  config_file = tmp_path / "mine.py"
  config_file.write_text(f"def get_config():\n  {body}\n")
  result = run_driver(f"--workdir={tmp_path / 'run'}", f"--config={config_file}")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith(f"error: config file {config_file} line 2 raised "), lines[0]
  assert lines[0].endswith("fix the file or pass another --config")


def test_a_workdir_that_is_a_file_is_named_as_such(tmp_path):
  """It read "cannot create the run directory lock (File exists)"."""
  blocker = tmp_path / "file"
  blocker.write_text("")
  train_file = write_topics_csv(tmp_path / "train.csv", 20)
  for workdir in (blocker, blocker / "run"):
    result = run_driver(
      f"--workdir={workdir}", f"--train_file={train_file}", "--config=seqclf/configs/tiny.py"
    )
    assert result.returncode == 2, result.stderr
    assert (
      result.stderr == f"error: --workdir={workdir}: {blocker} is a file, not a directory; pass a "
      "directory (a new one, or a run's to resume it)\n"
    )

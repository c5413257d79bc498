"""`seqclf/benchmarks/article.py` end to end on the tiny config, and its answers to bad input."""

import collections
import json
import os
import shutil
import signal
import textwrap

import pytest

from seqclf import metric_writers
from seqclf.benchmarks import article_report
from seqclf.rnn import engines
from tests import drivers


def run_article(*args, env_extra=None):
  return drivers.run("seqclf.benchmarks.article", *args, env=env_extra)


@pytest.fixture
def tiny_args(tiny_aclimdb, tmp_path):
  return [
    f"--imdb={tiny_aclimdb}",
    "--config=seqclf/configs/article_tiny.py",
    f"--cache_dir={tmp_path / 'cache'}",
  ]


def test_runs_end_to_end_and_writes_valid_results(tiny_args, tmp_path):
  """A new interpreter, as a user starts it: ``python -m seqclf.benchmarks.article``."""
  workdir = tmp_path / "work"
  result = drivers.run_fresh(
    "seqclf.benchmarks.article",
    *tiny_args,
    "--variants=lstm,cnn_lstm",
    "--seeds=1,2",
    "--epochs=2",
    f"--workdir={workdir}",
    "--engine=fused",
  )
  assert result.returncode == 0, result.stderr
  results = json.loads((workdir / "results.json").read_text())
  assert results["schema_version"] == 1 and results["kind"] == "article"
  meta = results["meta"]
  assert meta["device"]["platform"] == "cpu" and meta["device"]["count"] >= 1
  assert meta["versions"]["jax"] and meta["config"]["maxlen"] == 24
  assert [(r["variant"], r["seed"]) for r in results["runs"]] == [
    ("lstm", 1),
    ("lstm", 2),
    ("cnn_lstm", 1),
    ("cnn_lstm", 2),
  ]
  for run in results["runs"]:
    assert run["engine"] == "fused" and run["compile_s"] > 0
    assert [e["epoch"] for e in run["epochs"]] == [1, 2]
    for epoch in run["epochs"]:
      assert set(epoch) >= {
        "epoch",
        "epoch_s",
        "examples_per_s",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
      }
      assert 0 <= epoch["test_acc"] <= 1 and epoch["epoch_s"] > 0
  table = (workdir / "results.md").read_text()
  assert table.splitlines()[0].startswith("| variant | engine | s/epoch | compile s | test acc (mean ± sd) |")
  assert "| lstm | fused |" in table and "86.79 %" in table
  assert table in result.stdout
  vocab = json.loads((workdir / "vocab.json").read_text())
  assert vocab  # prediction needs it


def test_several_engines_train_side_by_side(tiny_args, tmp_path):
  workdir = tmp_path / "work"
  result = run_article(
    *tiny_args, "--variants=lstm", "--epochs=1", f"--workdir={workdir}", "--engine=cpu_kernel,flax,scan"
  )
  assert result.returncode == 0, result.stderr
  runs = json.loads((workdir / "results.json").read_text())["runs"]
  assert [r["engine"] for r in runs] == ["cpu_kernel", "flax", "scan"]
  # Same initialisation and data order, the same model: the engines' first-epoch losses agree closely.
  losses = [r["epochs"][0]["train_loss"] for r in runs]
  assert max(losses) - min(losses) < 1e-3
  summary = (workdir / "results.md").read_text().split("\n\n")[0]  # then the per-run table
  rows = [line for line in summary.splitlines() if line.startswith("| lstm")]
  assert len(rows) == 3 and rows[0].split("|")[9].strip() == "–"  # the first engine is the reference
  assert all(row.split("|")[9].strip().endswith("x") for row in rows[1:])


def test_gru_variants_train_with_the_gru_engines_side_by_side(tiny_args, tmp_path):
  workdir = tmp_path / "work"
  result = run_article(
    *tiny_args, "--variants=gru,cnn_gru", "--epochs=1", f"--workdir={workdir}", "--engine=cpu_kernel,flax"
  )
  assert result.returncode == 0, result.stderr
  runs = json.loads((workdir / "results.json").read_text())["runs"]
  assert [(r["variant"], r["engine"]) for r in runs] == [
    ("gru", "cpu_kernel"),
    ("gru", "flax"),
    ("cnn_gru", "cpu_kernel"),
    ("cnn_gru", "flax"),
  ]
  losses = [r["epochs"][0]["train_loss"] for r in runs[:2]]
  assert abs(losses[0] - losses[1]) < 1e-3  # the same model, two engines


def test_the_flax_baseline_refuses_a_model_with_lstm_dropout(tiny_args, tmp_path):
  result = run_article(
    *tiny_args,
    "--variants=lstm_recurrent_dropout",
    "--epochs=1",
    "--engine=flax",
    f"--workdir={tmp_path / 'work'}",
  )
  assert result.returncode == 2
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: LSTM engine 'flax'") and "dropout" in last_line


def test_same_seed_gives_identical_metrics(tiny_args, tmp_path):
  def metrics(name):
    result = run_article(
      *tiny_args, "--variants=lstm_recurrent_dropout", "--seeds=3", f"--workdir={tmp_path / name}"
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / name / "results.json").read_text())["runs"]
    return [
      {k: v for k, v in e.items() if k not in ("epoch_s", "examples_per_s", "eval_s")}
      for e in runs[0]["epochs"]
    ]

  assert metrics("a") == metrics("b")


def _corrupt_archive(tmp_path, _tree):
  path = tmp_path / "corrupt.tar.gz"
  path.write_bytes(os.urandom(4096))
  return path


def _tree_without_test_neg(tmp_path, tree):
  copy = tmp_path / "broken_tree"
  shutil.copytree(tree, copy)
  shutil.rmtree(copy / "aclImdb" / "test" / "neg")
  return copy


BAD_INPUTS = [
  # (case, extra args or a function building the --imdb path, expected words in the message)
  ("missing archive", ["--imdb=/nonexistent/aclImdb.tar.gz"], "/nonexistent/aclImdb.tar.gz"),
  ("corrupt archive", _corrupt_archive, "corrupt.tar.gz"),
  ("tree without test/neg", _tree_without_test_neg, "neg"),
  ("unknown variant", ["--variants=lstm,rnn"], "unknown variant 'rnn'"),
  (
    "a GRU on an LSTM-only engine",
    ["--variants=gru", "--engine=pallas"],
    "unknown GRU engine 'pallas' (it has no GRU; it runs LSTM)",
  ),
  ("unknown engine", ["--engine=warp"], "unknown LSTM engine 'warp'"),
  ("zero batch size", ["--config.batch_size=0"], "batch_size"),
  ("negative maxlen", ["--config.maxlen=-5"], "maxlen"),
  ("zero epochs", ["--epochs=0"], "epochs"),
  ("zero top_words", ["--config.top_words=0"], "top_words"),
  ("bad seeds", ["--seeds=1,x"], "--seeds"),
  ("no processes", ["--num_processes=0"], "--num_processes must be at least 1"),
  ("a process index outside the job", ["--process_id=5"], "--process_id must be in [0, 1)"),
  ("a seed twice", ["--seeds=0,1,0"], "--seeds names 0 more than once"),
  ("a variant twice", ["--variants=lstm,cnn_lstm,lstm"], "--variants names lstm more than once"),
  ("unknown config key", ["--config.no_such_key=1"], "no_such_key"),
  ("maxlen shorter than the pooling needs", ["--variants=cnn_lstm", "--config.maxlen=1"], "max-pooling"),
  (
    "batch size not divisible by the devices",
    ["--config.batch_size=3", "XLA_FLAGS=2 devices"],
    "does not divide",
  ),
  ("too many buckets", ["--config.num_buckets=9"], "num_buckets"),
  ("a step too large for memory", ["--config.batch_size=4000000", "--config.maxlen=100000"], "GiB"),
  ("peers with bucketing", ["--peers=torch", "--bucketing"], "fixed-length"),
  ("peers_only without peers", ["--peers_only"], "--peers_only trains the --peers only"),
  (
    "unknown gate activation",
    ["--config.model.recurrent_activation=relu"],
    "unknown recurrent_activation 'relu'",
  ),
]


@pytest.mark.parametrize("case,bad,expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_code_2(case, bad, expected, tiny_args, tiny_aclimdb, tmp_path):
  args = list(tiny_args)
  env_extra = {}
  if callable(bad):
    args[0] = f"--imdb={bad(tmp_path, tiny_aclimdb)}"
  else:
    args += [arg for arg in bad if not arg.startswith("XLA_FLAGS")]
    if "XLA_FLAGS=2 devices" in bad:
      env_extra["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  workdir = tmp_path / "work"
  result = run_article(*args, f"--workdir={workdir}", env_extra=env_extra)
  assert result.returncode == 2, (case, result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert expected in lines[0]
  assert "Traceback" not in result.stderr
  assert not (workdir / "results.json").exists()


def test_unwritable_workdir_is_refused_before_training(tiny_args, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  result = run_article(*tiny_args, f"--workdir={blocker / 'sub'}")
  assert result.returncode == 2
  assert "--workdir" in result.stderr and "Traceback" not in result.stderr


def _run(variant, engine, seed, test_acc, epoch_s=(10.0, 12.0)):
  epochs = [{"epoch_s": s, "test_acc": test_acc} for s in epoch_s]
  return {"variant": variant, "engine": engine, "seed": seed, "compile_s": 1.0, "epochs": epochs}


def test_summary_rows_give_mean_sample_sd_and_whether_the_article_lies_within():
  runs = [
    _run("lstm", "fused", 0, 0.8331, (30.0, 31.0)),
    _run("lstm", "fused", 1, 0.8700, (32.0, 29.0)),
    _run("lstm", "fused", 2, 0.8745, (40.0, 33.0)),
    _run("cnn_lstm", "fused", 0, 0.8780),
    _run("cnn_lstm", "fused", 1, 0.8790),
  ]
  lstm, cnn_lstm = article_report.summary_rows(runs)
  # lstm: mean 85.92, sample sd 2.27 -> the article's 86.79 lies within; median of 6 epoch times = 31.5.
  assert lstm[:8] == ["lstm", "fused", "31.50", "1.00", "85.92 ± 2.27 %", 3, "86.79 %", "yes"]
  # cnn_lstm: 87.85 ± 0.07: the article's 86.36 lies outside.
  assert cnn_lstm[4:8] == ["87.85 ± 0.07 %", 2, "86.36 %", "no"]
  slower = [
    {**run, "engine": "flax", "epochs": [{**e, "epoch_s": 2 * e["epoch_s"]} for e in run["epochs"]]}
    for run in runs[:3]
  ]
  assert article_report.summary_rows(runs[:3] + slower)[1][8] == "0.50x"  # half the baseline's speed
  assert article_report.table_header(runs)[8] == "speed-up vs fused"
  (one_seed,) = article_report.summary_rows(runs[:1])
  assert one_seed[4:8] == ["83.31 %", 1, "86.79 %", "–"]  # no spread from one seed


def test_run_progress_counts_runs_and_estimates_the_time_left(monkeypatch, capsys):
  clock = iter([100.0, 110.0, 130.0, 130.0])  # start, after epoch 1, after epoch 2, at run 2's start
  monkeypatch.setattr(article_report.time, "perf_counter", lambda: next(clock))
  progress = article_report.RunProgress(total_runs=2, epochs_per_run=2)
  progress.start_run("lstm [fused] seed 0")
  assert progress.epoch_done() == "run 1/2, 0m30s left"  # 10 s an epoch, 3 epochs to go
  assert progress.epoch_done() == "run 1/2, 0m30s left"  # 15 s an epoch, 2 to go
  progress.start_run("lstm [fused] seed 1")
  assert capsys.readouterr().out.splitlines() == [
    "[run 1/2] lstm [fused] seed 0",
    "[run 2/2] lstm [fused] seed 1, about 0m30s left",
  ]


def test_three_seeds_show_the_spread_and_every_line_says_which_run(tiny_args, tmp_path):
  workdir = tmp_path / "work"
  result = run_article(*tiny_args, "--variants=lstm", "--seeds=0,1,2", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert [line.split("]")[0] for line in lines if line.startswith("[run ")] == [
    "[run 1/3",
    "[run 2/3",
    "[run 3/3",
  ]
  assert [line.split("| ")[-1].split(",")[0] for line in lines if " epoch 1: " in line] == [
    "run 1/3",
    "run 2/3",
    "run 3/3",
  ]
  summary = (workdir / "results.md").read_text().split("\n\n")[0]  # then the per-run table
  (row,) = [line for line in summary.splitlines() if line.startswith("| lstm")]
  cells = [cell.strip() for cell in row.split("|")[1:-1]]
  assert "±" in cells[4] and cells[5] == "3" and cells[7] in ("yes", "no")
  assert "mean ± sample standard deviation" in result.stdout


def test_the_article_s_gates_train_with_an_engine_that_has_them(tiny_args, tmp_path):
  """hard_sigmoid gates: auto resolves past the C++ kernel (sigmoid only) to an engine that has them."""
  workdir = tmp_path / "work"
  args = ["--variants=lstm", "--epochs=1", "--config.model.recurrent_activation=hard_sigmoid"]
  result = run_article(*tiny_args, *args, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  results = json.loads((workdir / "results.json").read_text())
  assert results["meta"]["config"]["model"]["recurrent_activation"] == "hard_sigmoid"
  (run,) = results["runs"]
  assert engines.engines_of("lstm")[run["engine"]].recurrent_activations  # fused on CPU
  refused = run_article(*tiny_args, *args, "--engine=cpu_kernel", f"--workdir={tmp_path / 'refused'}")
  assert refused.returncode == 2
  assert (
    "'cpu_kernel' has no recurrent_activation='hard_sigmoid'; use engine 'scan' or 'fused'" in refused.stderr
  )


def test_peers_only_trains_the_peers_and_no_seqclf_engine(tiny_args, tmp_path):
  pytest.importorskip("torch")
  workdir = tmp_path / "work"
  result = run_article(
    *tiny_args, "--variants=lstm", "--epochs=1", "--peers=torch", "--peers_only", f"--workdir={workdir}"
  )
  assert result.returncode == 0, result.stderr
  assert [run["engine"] for run in json.loads((workdir / "results.json").read_text())["runs"]] == ["torch"]


def test_the_article_faithful_config_is_the_article_with_keras_1s_gates_and_epsilon():
  from seqclf.configs import article, article_faithful

  faithful, default = article_faithful.get_config(), article.get_config()
  assert faithful.model.recurrent_activation == "hard_sigmoid" and faithful.adam_eps == 1e-8
  assert default.model.recurrent_activation == "sigmoid" and default.adam_eps == 1e-7
  faithful.model.recurrent_activation, faithful.adam_eps = "sigmoid", 1e-7
  assert faithful.to_dict() == default.to_dict()  # nothing else differs


def test_the_default_config_trains_three_seeds():
  from seqclf.configs import article

  assert article.get_config().seeds == "0,1,2"


CONFIG_AND_FLAG_ERRORS = [
  # (case, args replacing or extending the tiny ones, expected words in the one line)
  ("another driver's config", ["--config=seqclf/configs/tiny.py"], "not a seqclf.benchmarks.article config"),
  ("shortcut and its config field", ["--epochs=2", "--config.epochs=3"], "--epochs and --config.epochs"),
  ("integer flag that is not a number", ["--epochs=three"], "epochs"),
  ("config field that is not a number", ["--config.epochs=three"], "epochs"),
  ("config field of the wrong type", ["--config.model.bidirectional=maybe"], "bidirectional"),
  ("malformed sha256", ["--imdb=http://127.0.0.1:9/a.tar.gz", "--imdb_sha256=xyz"], "64 hexadecimal"),
  ("sha256 for a local path", ["--imdb_sha256=" + "0" * 64], "only applies to an http(s) URL"),
]


@pytest.mark.parametrize(
  "case,extra,expected", CONFIG_AND_FLAG_ERRORS, ids=[c[0] for c in CONFIG_AND_FLAG_ERRORS]
)
def test_config_and_flag_errors_give_one_line_and_exit_code_2(case, extra, expected, tiny_args, tmp_path):
  args = [arg for arg in tiny_args if not any(arg.split("=")[0] == e.split("=")[0] for e in extra)]
  result = run_article(*args, *extra, f"--workdir={tmp_path / 'work'}")
  assert result.returncode == 2, (case, result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_a_url_with_no_server_behind_it_fails_in_one_line_and_keeps_nothing(tiny_args, tmp_path):
  import socket

  with socket.socket() as probe:  # a loopback port with nobody listening
    probe.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{probe.getsockname()[1]}/aclImdb_v1.tar.gz"
  args = [f"--imdb={url}", *tiny_args[1:]]
  result = run_article(*args, f"--workdir={tmp_path / 'work'}", env_extra={"no_proxy": "127.0.0.1"})
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f"error: cannot download {url}: cannot reach the server") and "--imdb=PATH" in line
  assert os.listdir(tmp_path / "cache" / "downloads") == []


def test_a_rerun_keeps_the_runs_already_done_and_restart_starts_over(tiny_args, tmp_path):
  """Killed after two of its twelve runs, the driver started all twelve again and overwrote results.json."""
  workdir = tmp_path / "work"
  common = [*tiny_args, "--variants=lstm", "--engine=scan", "--epochs=1", f"--workdir={workdir}"]
  first = run_article(*common, "--seeds=1")
  assert first.returncode == 0, first.stderr
  first_runs = json.loads((workdir / "results.json").read_text())["runs"]
  # As after a kill: seed 1 done, seed 2 not; the rerun trains seed 2 only and keeps seed 1's record.
  second = run_article(*common, "--seeds=1,2")
  assert second.returncode == 0, second.stderr
  assert "keeping 1 run(s)" in second.stdout and "lstm [scan] seed 1 epoch" not in second.stdout
  assert "lstm [scan] seed 2 epoch 1" in second.stdout
  runs = json.loads((workdir / "results.json").read_text())["runs"]
  assert [run["seed"] for run in runs] == [1, 2] and runs[0] == first_runs[0]
  # Another config would mix incomparable rows: refused, and --restart replaces the runs.
  other = run_article(*common, "--seeds=1,2", "--config.learning_rate=0.01")
  assert other.returncode == 2 and "another config" in other.stderr and "--restart" in other.stderr
  restarted = run_article(*common, "--seeds=2", "--config.learning_rate=0.01", "--restart")
  assert restarted.returncode == 0, restarted.stderr
  assert [run["seed"] for run in json.loads((workdir / "results.json").read_text())["runs"]] == [2]


def test_wilson_interval_and_median_interval_are_the_textbook_ones():
  low, high = article_report.wilson_interval(1, 10)
  assert (round(100 * low, 2), round(100 * high, 2)) == (1.79, 40.42)
  low, high = article_report.wilson_interval(0, 10)
  assert low == 0.0 and round(100 * high, 2) == 27.75
  values = [0.1 * v for v in (9, 3, 7, 1, 5, 8, 2, 10, 4, 6)]
  assert article_report.median_interval(values) == (0.2, 0.9)  # x_(2), x_(9) of 10: 97.9 % coverage
  assert article_report.median_interval(values[:6]) == (0.1, 0.9)  # x_(1), x_(6) of 6: 96.9 %
  assert article_report.median_interval(values[:5]) is None  # 5 values cannot give 95 %


def test_the_table_shows_the_distribution_and_flags_a_collapsed_run():
  finals = [0.8744, 0.7534, 0.8677, 0.8743, 0.8656, 0.8676, 0.8590, 0.8557, 0.8358, 0.8546]
  runs = [_run("lstm", "cpu_kernel", seed, acc) for seed, acc in enumerate(finals)]
  (row,) = article_report.summary_rows(runs)
  header = article_report.TABLE_HEADER
  cells = dict(zip(header, row))
  assert cells["test acc (mean ± sd)"] == "85.08 ± 3.61 %"
  assert cells["mean's se"] == "1.14"  # 3.61 / sqrt(10)
  assert cells["median (95 % CI)"] == "86.23 % (83.58–87.43)"
  assert cells["collapsed (< 80 %, 95 % CI)"] == "1/10 (2–40 %)"
  per_seed = cells["per seed (✗: collapsed)"].split(", ")
  assert per_seed[:3] == ["0: 87.44", "1: 75.34 ✗", "2: 86.77"] and len(per_seed) == 10
  seed_rows = article_report.seed_rows(runs)
  assert seed_rows[1] == ["lstm", "cpu_kernel", 1, "75.34 / 75.34", "75.34 %", "✗"]
  assert seed_rows[0][-1] == ""
  markdown = article_report.markdown(runs)
  assert markdown.count("| lstm | cpu_kernel |") == 11  # the summary row and one row per run


def test_a_sweep_checks_every_variant_and_engine_before_training_any(tiny_aclimdb, tmp_path):
  """`--engine=cpu_kernel,flax` trained five runs, then failed at lstm_recurrent_dropout [flax]."""
  workdir = tmp_path / "work"
  sweep = [
    f"--imdb={tiny_aclimdb}",
    "--config=seqclf/configs/article_tiny.py",
    f"--cache_dir={tmp_path / 'cache'}",
    "--variants=lstm_recurrent_dropout",
    "--engine=scan,flax",
    "--seeds=0",
    "--epochs=1",
    f"--workdir={workdir}",
  ]
  refused = run_article(*sweep)
  lines = refused.stderr.strip().splitlines()
  assert refused.returncode == 2 and len(lines) == 1, refused.stderr
  assert "(lstm_recurrent_dropout [flax])" in lines[0] and "--skip_unsupported" in lines[0]
  assert not workdir.exists()  # refused before anything trained or was written
  skipping = run_article(*sweep, "--skip_unsupported")
  assert skipping.returncode == 0, skipping.stderr
  written = json.loads((workdir / "results.json").read_text())
  assert [(run["variant"], run["engine"]) for run in written["runs"]] == [("lstm_recurrent_dropout", "scan")]
  assert [(pair["variant"], pair["engine"]) for pair in written["skipped"]] == [
    ("lstm_recurrent_dropout", "flax")
  ]
  assert (
    "| lstm_recurrent_dropout | flax | skipped: LSTM engine 'flax' has no input dropout"
    in (workdir / "results.md").read_text()
  )


def test_a_rerun_with_another_config_names_the_keys_that_differ(tiny_aclimdb, tmp_path):
  """It printed both whole configs (1.6 kB on one line)."""
  common = [
    f"--imdb={tiny_aclimdb}",
    "--config=seqclf/configs/article_tiny.py",
    f"--cache_dir={tmp_path / 'cache'}",
    "--variants=lstm",
    "--engine=scan",
    "--seeds=0",
    "--epochs=1",
    f"--workdir={tmp_path / 'work'}",
  ]
  assert run_article(*common).returncode == 0
  other = run_article(*common, "--config.learning_rate=0.01", "--config.batch_size=2")
  assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
  assert "another config (batch_size: 4 -> 2; learning_rate: 0.001 -> 0.01); pass --restart" in other.stderr


def test_a_full_workdir_disk_is_one_line(tiny_aclimdb, tmp_path):
  """Writing the vocabulary into a full workdir was a traceback."""
  from tests import full_disk

  with full_disk.small_tmpfs(tmp_path / "disk", size="64k") as disk:
    full_disk.fill(disk / "filler")
    result = run_article(
      f"--imdb={tiny_aclimdb}",
      "--config=seqclf/configs/article_tiny.py",
      f"--cache_dir={tmp_path / 'cache'}",
      "--variants=lstm",
      "--engine=scan",
      f"--workdir={disk / 'work'}",
    )
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith(f"error: cannot write {disk / 'work'} (No space left on device)")


def test_a_rerun_on_changed_data_at_the_same_path_is_refused_before_writing(
  tiny_args, tiny_aclimdb, tmp_path
):
  """Runs on the old and the new contents of one aclImdb directory were averaged into one row."""
  workdir = tmp_path / "work"
  common = [*tiny_args, "--variants=lstm", "--engine=scan", "--epochs=1", f"--workdir={workdir}"]
  first = run_article(*common, "--seeds=0")
  assert first.returncode == 0, first.stderr
  written = {name: (workdir / name).read_bytes() for name in ("results.json", "results.md", "vocab.json")}
  for review in sorted((tiny_aclimdb / "aclImdb" / "train" / "pos").glob("*.txt")):
    review.write_text("awful awful")
  changed = run_article(*common, "--seeds=0,1")
  lines = changed.stderr.strip().splitlines()
  assert changed.returncode == 2 and len(lines) == 1, changed.stderr
  assert lines[0].startswith("error: ") and "trained on other data: the encoded data" in lines[0]
  assert "--restart" in lines[0]
  assert {name: (workdir / name).read_bytes() for name in written} == written
  assert not (workdir / "logs" / "lstm-scan-seed1").exists()
  assert run_article(*common, "--seeds=0,1", "--restart").returncode == 0


def test_a_second_process_on_the_same_workdir_is_refused(tiny_args, tmp_path):
  """Two invocations on one workdir both trained every run, and the last results.json won."""
  from seqclf import checkpoint

  workdir = tmp_path / "work"
  with checkpoint.RunLock(str(workdir)):  # as a first invocation still training holds it
    second = run_article(*tiny_args, "--variants=lstm", "--epochs=1", f"--workdir={workdir}")
  lines = second.stderr.strip().splitlines()
  assert second.returncode == 2 and len(lines) == 1, second.stderr
  assert lines[0].startswith(f"error: {workdir} is in use by process {os.getpid()}")
  assert sorted(os.listdir(workdir)) == [".lock"]


def test_a_start_refused_in_a_new_workdir_leaves_no_directory(tiny_args, tmp_path):
  workdir = tmp_path / "new"
  refused = run_article(
    *tiny_args, "--variants=lstm", "--epochs=1", f"--workdir={workdir}", f"--imdb={tmp_path}/nope"
  )
  assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
  assert not workdir.exists()


# Runs the article driver and, right after epoch 1 of its Nth run is logged, sends itself a signal.
SIGNAL_AFTER_EPOCH_1 = textwrap.dedent(
  """
  import os, signal, sys
  from seqclf import metric_writers
  from seqclf.benchmarks import article
  write, signal_number = metric_writers.MultiWriter.write_scalars, getattr(signal, sys.argv.pop(1))
  run_number, started = int(sys.argv.pop(1)), []
  def write_then_signal(self, step, scalars):
    write(self, step, scalars)
    started.extend([step] if step == 1 else [])
    if step == 1 and len(started) == run_number:
      os.kill(os.getpid(), signal_number)
  metric_writers.MultiWriter.write_scalars = write_then_signal
  sys.argv = ["seqclf.benchmarks.article", *sys.argv[1:]]
  article.run()
  """
)


def test_a_run_killed_and_resumed_logs_every_epoch_once(tiny_args, tmp_path):
  """A run killed after logging epoch 1 trained again from epoch 1 and appended to its log: [1, 1, 2]."""
  workdir = tmp_path / "work"
  args = [*tiny_args, "--variants=lstm", "--engine=scan", "--seeds=0", "--epochs=2", f"--workdir={workdir}"]
  killed = drivers.run("seqclf.benchmarks.article", "SIGKILL", "1", *args, code=SIGNAL_AFTER_EPOCH_1)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  resumed = run_article(*args)
  assert resumed.returncode == 0, resumed.stderr
  logdir = workdir / "logs" / "lstm-scan-seed0"
  steps = [json.loads(line)["step"] for line in (logdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2]
  if metric_writers.tensorboard_available():
    events = metric_writers.read_events(str(logdir))
    pairs = collections.Counter(
      (e.step, v.tag) for e in events for v in e.summary.value if v.WhichOneof("value") == "simple_value"
    )
    assert sorted({step for step, _ in pairs}) == [1, 2] and set(pairs.values()) == {1}
  (run,) = json.loads((workdir / "results.json").read_text())["runs"]
  assert [epoch["epoch"] for epoch in run["epochs"]] == [1, 2]


def test_ctrl_c_says_what_is_kept_and_how_to_go_on(tiny_args, tmp_path):
  """Ctrl-C printed "interrupted: " and nothing after it."""
  workdir = tmp_path / "work"
  args = [*tiny_args, "--variants=lstm", "--engine=scan", "--seeds=0,1", "--epochs=1", f"--workdir={workdir}"]
  stopped = drivers.run("seqclf.benchmarks.article", "SIGINT", "2", *args, code=SIGNAL_AFTER_EPOCH_1)
  assert stopped.returncode == 130, stopped.stderr
  assert stopped.stderr.strip().splitlines() == [
    f"interrupted: stopped by the user; the finished runs are in {workdir / 'results.json'}: run the same "
    "command again to train the others"
  ]
  assert [run["seed"] for run in json.loads((workdir / "results.json").read_text())["runs"]] == [0]
  restarted = drivers.run(
    "seqclf.benchmarks.article", "SIGINT", "2", *args, "--restart", code=SIGNAL_AFTER_EPOCH_1
  )
  assert restarted.returncode == 130 and "again without --restart to train" in restarted.stderr

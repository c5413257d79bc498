"""`seqclf.benchmarks.compare`: merging results of several devices into a table and plots, and what it refuses."""

import os
import pathlib
import re
import statistics

import pytest

from seqclf import results
from seqclf.benchmarks import compare
from seqclf.benchmarks.compare import sources as loading
from seqclf.benchmarks.compare import table
from seqclf.configs import tiny
from seqclf.errors import UsageError
from tests import drivers

REPO = pathlib.Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Seconds per epoch (two epochs, the same for both seeds) of two devices.
CPU1_SECONDS = {"lstm": [10.0, 12.0], "cnn_lstm": [5.0, 6.0]}
CPU4_SECONDS = {"lstm": [4.0, 5.0], "cnn_lstm": [2.5, 2.0]}


def article_results(device_count, seconds, *, maxlen=24, engine="fused", extra_runs=()):
  """An article results dict with real meta, ``device_count`` devices, and runs for seeds 0 and 1."""
  config = tiny.get_config()
  config.maxlen = maxlen
  meta = results.collect_meta(config)
  meta["device"]["count"] = device_count
  runs = []
  for variant, epoch_seconds in seconds.items():
    for seed in (0, 1):
      runs.append(
        {
          "variant": variant,
          "engine": engine,
          "seed": seed,
          "param_count": 100,
          "compile_s": 1.0,
          "epochs": [
            {
              "epoch": epoch,
              "epoch_s": s,
              "examples_per_s": 1000.0 / s,
              "train_loss": 0.5,
              "train_acc": 0.75,
              "test_loss": 0.6,
              "test_acc": 0.8 + 0.01 * epoch + 0.02 * seed,
              "eval_s": 0.1,
            }
            for epoch, s in enumerate(epoch_seconds, 1)
          ],
        }
      )
  return {
    "schema_version": results.SCHEMA_VERSION,
    "kind": "article",
    "meta": meta,
    "runs": runs + list(extra_runs),
  }


def engine_results():
  runs = []
  for engine, factor in (("scan", 2.0), ("fused", 1.0)):
    for batch in (16, 64):
      for hidden in (100, 256):
        for mode in ("fwd", "fwd_bwd"):
          median_s = factor * 1e-3 * batch * hidden / 100
          runs.append(
            {
              "engine": engine,
              "mode": mode,
              "batch": batch,
              "steps": 100,
              "input_size": 32,
              "hidden": hidden,
              "median_s": median_s,
              "min_s": median_s,
              "max_s": median_s,
              "tflops_per_s": 0.1,
              "speedup_vs_scan": 2.0 / factor,
            }
          )
  return {
    "schema_version": results.SCHEMA_VERSION,
    "kind": "lstm_engines",
    "meta": results.collect_meta(),
    "runs": runs,
  }


def write(path, obj):
  results.write_json_atomic(str(path), obj)
  return str(path)


@pytest.fixture
def two_devices(tmp_path):
  """Workdirs a (cpu x1, also holding an engine sweep) and b (cpu x4)."""
  a = write(tmp_path / "a" / "results.json", article_results(1, CPU1_SECONDS))
  write(tmp_path / "a" / "lstm_engines.json", engine_results())
  b = write(tmp_path / "b" / "results.json", article_results(4, CPU4_SECONDS))
  return pathlib.Path(a).parent, pathlib.Path(b).parent


def table_rows(markdown):
  """The first markdown table as a list of {header: cell} dicts."""
  lines = [line for line in markdown.splitlines() if line.startswith("|")]
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def assert_png(path):
  data = pathlib.Path(path).read_bytes()
  assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def run_compare(*args):
  return drivers.run("seqclf.benchmarks.compare", *args)


def test_sources_are_found_in_workdirs_and_labelled_by_device(two_devices, tmp_path):
  sources = loading.load_sources([str(tmp_path)])  # the parent: both workdirs are one level down
  assert [(os.path.relpath(s.path, tmp_path), s.kind) for s in sources] == [
    ("a/results.json", "article"),
    ("a/lstm_engines.json", "lstm_engines"),
    ("b/results.json", "article"),
  ]
  cpu = loading._short_cpu_name(sources[0].meta["cpu"])
  assert [s.label for s in sources] == [f"cpu x1 ({cpu})", f"cpu x1 ({cpu})", f"cpu x4 ({cpu})"]


def test_device_labels():
  meta = {
    "cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
    "device": {"platform": "cpu", "kind": "cpu", "count": 4, "process_count": 1},
  }
  assert loading.device_label(meta) == "cpu x4 (Intel Xeon Platinum 8481C)"
  meta = {
    "cpu": "AMD EPYC 9654 96-Core Processor",
    "device": {"platform": "gpu", "kind": "NVIDIA H200", "count": 8, "process_count": 2},
  }
  assert loading.device_label(meta) == "gpu x8 (NVIDIA H200, 2 processes)"


def test_same_device_twice_gets_told_apart(tmp_path):
  paths = [write(tmp_path / name / "results.json", article_results(1, CPU1_SECONDS)) for name in "ab"]
  labels = [source.label for source in loading.load_sources(paths)]
  assert labels[0].endswith(" #1") and labels[1].endswith(" #2")  # same host too: a counter
  sources = [loading.Source(path, results.load(path)) for path in paths]
  sources[1].results["meta"]["host"] = "other"
  loading.label_sources(sources)
  assert sources[1].label.endswith(" @other")


def test_table_has_medians_accuracies_and_speed_ups(two_devices):
  sources = [s for s in loading.load_sources([str(p) for p in two_devices]) if s.kind == "article"]
  one, four = (s.label for s in sources)
  rows = table_rows(table.comparison_table(table.group_rows(sources), [one, four], one))
  assert [(row["variant"], row["engine"]) for row in rows] == [("lstm", "fused"), ("cnn_lstm", "fused")]
  lstm, cnn = rows
  assert lstm[f"s/epoch {one}"] == "11" and lstm[f"s/epoch {four}"] == "4.5"  # median over epochs, seeds
  assert cnn[f"examples/s {four}"] == f"{statistics.median([400.0, 500.0, 400.0, 500.0]):,.0f}"
  assert lstm[f"speed-up {four} vs {one}"] == f"{11 / 4.5:.2f}x"
  assert cnn[f"speed-up {four} vs {one}"] == f"{5.5 / 2.25:.2f}x"
  assert lstm[f"test acc {one}"] == "83.00 % (±1.00)"  # final epoch, mean over seeds 0.82 and 0.84
  assert f"speed-up {one} vs {one}" not in lstm


def test_baseline_is_chosen_by_a_unique_start_of_its_label():
  labels = ["cpu x1 (AMD EPYC)", "cpu x4 (AMD EPYC)", "gpu x1 (NVIDIA H200)"]
  assert table.choose_baseline(labels, None) == labels[0]
  assert table.choose_baseline(labels, "GPU") == labels[2]
  with pytest.raises(UsageError, match="matches more than one device column"):
    table.choose_baseline(labels, "cpu")
  with pytest.raises(UsageError, match="matches no device column; choose from: cpu x1"):
    table.choose_baseline(labels, "tpu")


def test_peer_engines_get_their_own_rows_and_device_engines_share_one(tmp_path):
  torch_run = {**article_results(1, {"lstm": [20.0]})["runs"][0], "engine": "torch"}
  cpu = write(tmp_path / "cpu.json", article_results(1, {"lstm": [10.0]}, extra_runs=[torch_run]))
  gpu_results = article_results(1, {"lstm": [1.0]}, engine="cudnn")
  gpu_results["meta"]["device"].update(platform="gpu", kind="NVIDIA H200")
  gpu = write(tmp_path / "gpu.json", gpu_results)
  sources = loading.load_sources([cpu, gpu])
  rows = table.group_rows(sources)
  assert [(row.name, row.engines()) for row in rows] == [("lstm", "fused, cudnn"), ("lstm (torch)", "torch")]
  cells = table_rows(table.comparison_table(rows, [s.label for s in sources], sources[0].label))
  assert cells[1]["s/epoch gpu x1 (NVIDIA H200)"] == "–"


def test_config_mismatch_is_refused_unless_allowed(tmp_path):
  a = write(tmp_path / "a.json", article_results(1, CPU1_SECONDS, maxlen=24))
  b = write(tmp_path / "b.json", article_results(4, CPU4_SECONDS, maxlen=500))
  with pytest.raises(
    UsageError,
    match=r"differ in maxlen: 24 in .*a\.json, 500 in .*b\.json.*"
    r"--allow_config_mismatch",
  ):
    compare.write_comparison([a, b], str(tmp_path / "out"))
  written = compare.write_comparison([a, b], str(tmp_path / "out"), allow_config_mismatch=True)
  assert (
    "**Configs differ** (merged with --allow_config_mismatch) in maxlen"
    in pathlib.Path(written[0]).read_text()
  )


def test_other_kinds_and_missing_paths_are_refused(tmp_path):
  other = write(
    tmp_path / "x.json", {"schema_version": results.SCHEMA_VERSION, "kind": "predict", "meta": {}, "runs": []}
  )
  with pytest.raises(UsageError, match="holds 'predict' results; compare reads article and lstm_engines"):
    loading.load_sources([other])
  with pytest.raises(UsageError, match="does not exist"):
    loading.load_sources([str(tmp_path / "missing")])
  (tmp_path / "empty").mkdir()
  with pytest.raises(UsageError, match="no results.json or lstm_engines.json in"):
    loading.load_sources([str(tmp_path / "empty")])


def test_cli_writes_table_and_three_pngs(two_devices, tmp_path):
  out = tmp_path / "out"
  result = run_compare(*two_devices, f"--out={out}", "--baseline=cpu x4")
  assert result.returncode == 0, result.stderr
  markdown = (out / "compare.md").read_text()
  assert markdown in result.stdout
  rows = table_rows(markdown)
  one, four = (key[len("s/epoch ") :] for key in rows[0] if key.startswith("s/epoch "))
  assert rows[0][f"speed-up {one} vs {four}"] == f"{4.5 / 11:.2f}x"
  assert str(two_devices[0] / "results.json") in markdown and "lstm_engines.json" in markdown
  for name in ("epoch_time.png", "test_accuracy.png", "engine_sweep.png"):
    assert_png(out / name)


def test_cli_refuses_a_config_mismatch_with_one_line(tmp_path):
  a = write(tmp_path / "a" / "results.json", article_results(1, CPU1_SECONDS, maxlen=24))
  b = write(tmp_path / "b" / "results.json", article_results(4, CPU4_SECONDS, maxlen=500))
  result = run_compare(a, b, f"--out={tmp_path / 'out'}")
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: ") and "maxlen" in line and "--allow_config_mismatch" in line
  assert not (tmp_path / "out").exists()

  result = run_compare(a, b, f"--out={tmp_path / 'out'}", "--allow_config_mismatch")
  assert result.returncode == 0, result.stderr
  assert len(table_rows((tmp_path / "out" / "compare.md").read_text())) == 2


def test_cli_refuses_another_schema_version(tmp_path):
  old = article_results(1, CPU1_SECONDS)
  old["schema_version"] = results.SCHEMA_VERSION + 1
  path = write(tmp_path / "results.json", old)
  result = run_compare(path, f"--out={tmp_path / 'out'}")
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: ") and "schema version" in line


def test_cli_needs_results_and_out(tmp_path):
  result = run_compare(f"--out={tmp_path}")
  assert result.returncode == 2 and "no results given" in result.stderr
  path = write(tmp_path / "results.json", article_results(1, CPU1_SECONDS))
  result = run_compare(path)
  assert result.returncode == 2 and "--out is required" in result.stderr


def test_engine_sweep_over_sequence_length_from_two_devices(tmp_path):
  sweeps = []
  for name, count in (("a", 1), ("b", 4)):
    sweep = engine_results()
    sweep["meta"]["device"]["count"] = count
    sweep["runs"] = [{**run, "batch": 64, "steps": run["batch"] * 10} for run in sweep["runs"]]
    sweeps.append(write(tmp_path / name / "lstm_engines.json", sweep))
  written = compare.write_comparison(sweeps, str(tmp_path / "out"))
  assert [os.path.basename(path) for path in written] == ["compare.md", "engine_sweep.png"]
  assert_png(written[1])
  with pytest.raises(UsageError, match="--baseline picks a device column of article results"):
    compare.write_comparison(sweeps, str(tmp_path / "out"), baseline="cpu")


@pytest.mark.parametrize(
  "runs,message",
  [
    ([{"engine": "fused", "epochs": []}], "run 0 has no variant"),
    (
      [{"variant": "lstm", "engine": "fused", "epochs": [{"epoch": 1, "epoch_s": 1.0}]}],
      "no examples_per_s, test_acc",
    ),
    ("not a list", "has no list of runs"),
  ],
)
def test_a_file_with_incomplete_runs_is_refused_with_its_gap(tmp_path, runs, message):
  path = write(tmp_path / "results.json", {**article_results(1, CPU1_SECONDS), "runs": runs})
  with pytest.raises(UsageError, match=message):
    loading.load_sources([path])


def test_only_the_plots_module_imports_matplotlib():
  package = REPO / "seqclf" / "benchmarks" / "compare"
  imports = re.compile(r"^\s*(import matplotlib|from matplotlib|.*require\(\"matplotlib)", re.MULTILINE)
  importing = sorted(path.name for path in package.glob("*.py") if imports.search(path.read_text()))
  assert importing == ["plots.py"]


def test_cli_names_out_when_it_cannot_write(tmp_path):
  path = write(tmp_path / "results.json", article_results(1, CPU1_SECONDS))
  (tmp_path / "file").write_text("")
  result = run_compare(path, f"--out={tmp_path / 'file' / 'out'}")
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: cannot write") and line.endswith("pass a writable --out")


def test_a_sweeps_error_rows_are_left_out(tmp_path):
  """An engine that refused a shape is an error row in lstm_engines.json, with no timing to compare."""
  sweep = engine_results()
  sweep["runs"].append(
    {"engine": "mosaic", "batch": 64, "steps": 500, "hidden": 256, "error": "ConfigError: x"}
  )
  write(tmp_path / "lstm_engines.json", sweep)
  (source,) = loading.load_sources([str(tmp_path)])
  assert source.runs == engine_results()["runs"]

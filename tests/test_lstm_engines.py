"""`seqclf.benchmarks.lstm_engines`: which engines it times, the FLOP count, and the results file it writes."""

import json

import jax
import pytest

from seqclf.benchmarks import lstm_engines
from seqclf.rnn import init_params
from tests import drivers


def test_native_engines_on_cpu_leave_out_interpret_mode_gpu_engines_and_keep_the_flax_baseline():
  engines = lstm_engines.native_engines("cpu")
  assert {"scan", "fused", "flax"} <= set(engines)
  assert not {"pallas", "cudnn", "mosaic"} & set(engines)


def test_flops_are_the_matmuls_of_the_four_gates():
  # Per step and row: [E + H] x [4H] multiply-adds.
  assert lstm_engines.lstm_flops(batch=2, steps=3, input_size=5, hidden=7) == 2.0 * 2 * 3 * 12 * 28


def test_time_engine_measures_forward_and_forward_backward():
  params = init_params(jax.random.key(0), 3, 4)
  xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
  timings = lstm_engines.time_engine("scan", params, xs, repeats=2)
  assert set(timings) == {"fwd", "fwd_bwd"}
  for stats in timings.values():
    assert stats["repeats"] == 2 and stats["compile_s"] > 0 and stats["median_s"] > 0


def test_the_driver_writes_every_shape_and_engine_against_scan(tmp_path):
  command = ["--engines=fused,cudnn", "--batch_sizes=2,4", "--steps=3", "--hidden_sizes=4", "--input_size=3"]
  result = drivers.run("seqclf.benchmarks.lstm_engines", *command, "--repeats=1", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr
  written = json.loads((tmp_path / "lstm_engines.json").read_text())
  assert written["schema_version"] == 1 and written["kind"] == "lstm_engines"
  assert written["meta"]["flags"]["batch_sizes"] == [2, 4]
  # cudnn does not run on CPU: an error row per shape with the reason, and the sweep goes on.
  refused = [run for run in written["runs"] if "error" in run]
  assert [(r["engine"], r["batch"]) for r in refused] == [("cudnn", 2), ("cudnn", 4)]
  assert "needs a GPU and this process runs on cpu" in refused[0]["error"]
  assert "ERROR lstm_engines cudnn B2 T3 H4: ConfigError" in result.stdout
  runs = [run for run in written["runs"] if "error" not in run]
  # scan is always measured: every ratio is against it, in the same process.
  assert sorted((r["engine"], r["mode"], r["batch"]) for r in runs) == sorted(
    (engine, mode, batch) for engine in ("scan", "fused") for mode in ("fwd", "fwd_bwd") for batch in (2, 4)
  )
  for run in runs:
    assert run["tflops_per_s"] > 0 and run["min_s"] <= run["median_s"] <= run["max_s"]
    if run["engine"] == "scan":
      assert run["speedup_vs_scan"] == 1.0
  table = (tmp_path / "lstm_engines.md").read_text()
  assert "| fused | fwd_bwd | 4 | 3 | 4 |" in table and "| cudnn | – | 4 | 3 | 4 |" in table


def test_cells_sweeps_the_gru_engines_against_the_grus_scan(tmp_path):
  command = ["--cells=lstm,gru", "--batch_sizes=2", "--steps=3", "--hidden_sizes=4", "--input_size=3"]
  command += ["--repeats=1", f"--workdir={tmp_path}"]
  result = drivers.run("seqclf.benchmarks.lstm_engines", *command, "--engines=fused,pallas")
  assert result.returncode != 0 and "error: --engines=pallas runs in interpret mode" in result.stderr
  result = drivers.run("seqclf.benchmarks.lstm_engines", *command, "--engines=fused")
  assert result.returncode == 0, result.stderr
  runs = json.loads((tmp_path / "lstm_engines.json").read_text())["runs"]
  assert sorted((r["cell"], r["engine"], r["mode"]) for r in runs) == sorted(
    (cell, engine, mode)
    for cell in ("lstm", "gru")
    for engine in ("scan", "fused")
    for mode in ("fwd", "fwd_bwd")
  )
  gru_scan = next(r for r in runs if (r["cell"], r["engine"], r["mode"]) == ("gru", "scan", "fwd"))
  assert gru_scan["speedup_vs_scan"] == 1.0
  # The rate is stored as flops / seconds / 1e12, so multiplying back rounds: equal to a few ulps.
  assert gru_scan["tflops_per_s"] * gru_scan["median_s"] * 1e12 == pytest.approx(
    lstm_engines.lstm_flops(2, 3, 3, 4, gates=3), rel=1e-12
  )
  assert "| gru/fused | fwd_bwd | 2 | 3 | 4 |" in (tmp_path / "lstm_engines.md").read_text()

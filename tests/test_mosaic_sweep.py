"""`seqclf.benchmarks.mosaic_sweep` and its report: every measured row beside the cost model's predicted range.

The rows are built without a GPU from made-up timings; where this jax has Mosaic GPU the driver itself
runs one tiny configuration in the interpreter (on a GPU, `benchmarks/gpu_check.sh` runs it per
configuration).
"""

import json

import jax
import jax.numpy as jnp
import pytest

from seqclf.benchmarks import mosaic_report
from seqclf.rnn import init_params
from seqclf.rnn.engines import fused, mosaic_cost, mosaic_gpu
from tests import drivers

ARTICLE = {"batch": 64, "steps": 500, "input_size": 32, "hidden": 100}


def _stats(median_s):
  return {
    "median_s": median_s,
    "min_s": median_s,
    "max_s": median_s,
    "compile_s": 1.0,
    "max_rel_error_vs_fused": 0.0,
  }


def test_each_mode_is_measured_beside_its_prediction():
  shape = {"cluster_size": 8, "matmul_precision": "float32", **ARTICLE}
  predicted = mosaic_report.predicted_us_per_step(shape)
  low, high = mosaic_cost.predict_range(8, "float32")
  for mode, us in low.call_us.items():
    assert predicted[mode] == pytest.approx([us / 500, high.call_us[mode] / 500])
  # The forward and backward together take longer than the forward alone, at both ends.
  for end in (0, 1):
    assert predicted["fwd_bwd"][end] > predicted["fwd"][end] > predicted["final"][end]
  assert predicted["final"][1] > high.evaluation.total
  # 3 us/step for "fwd" falls within its range, 9 for "fwd_bwd" above it, 0.1 for "final" below.
  assert predicted["fwd"][0] < 3.0 < predicted["fwd"][1] and predicted["fwd_bwd"][1] < 9.0
  measured = {"fwd": _stats(1.5e-3), "fwd_bwd": _stats(4.5e-3), "final": _stats(5e-5)}
  runs, rows = mosaic_report.results_of(shape, measured, predicted)
  assert [(run["mode"], run["us_per_step"]) for run in runs] == [
    ("fwd", pytest.approx(3.0)),
    ("fwd_bwd", pytest.approx(9.0)),
    ("final", pytest.approx(0.1)),
  ]
  assert [run["predicted_us_per_step"] for run in runs] == [predicted[mode] for mode in measured]
  column = mosaic_report.HEADER.index("predicted µs/step")
  assert column == mosaic_report.HEADER.index("µs/step") + 1
  assert [row[column] for row in rows] == [
    f"{predicted[mode][0]:.2f}-{predicted[mode][1]:.2f}" for mode in measured
  ]
  assert [row[column + 1] for row in rows] == ["within", "above", "below"]
  assert all(len(row) == len(mosaic_report.HEADER) for row in rows)
  # The batch-split layout's rows: its own range, its layout named.
  split = mosaic_report.predicted_us_per_step({**shape, "layout": "batch"})
  assert split["final"][1] < predicted["final"][1]
  assert mosaic_report.results_of({**shape, "layout": "batch"}, measured, split)[1][0][0] == "batch"


def test_a_configuration_a_gpu_does_not_run_has_no_prediction():
  shape = {"cluster_size": 1, "matmul_precision": "float32", **ARTICLE}  # the interpreter runs it anyway
  assert mosaic_report.predicted_us_per_step(shape) is None
  runs, rows = mosaic_report.results_of(shape, {"fwd": _stats(1e-3)}, None)
  assert (
    runs[0]["predicted_us_per_step"] is None
    and rows[0][mosaic_report.HEADER.index("predicted µs/step")] == "–"
    and rows[0][mosaic_report.HEADER.index("vs predicted")] == "–"
  )


def _tiny_args(batch=2, steps=3, input_size=4, hidden=5):
  keys = jax.random.split(jax.random.key(0), 2)
  return (
    init_params(keys[0], input_size, hidden),
    jax.random.normal(keys[1], (batch, steps, input_size)),
    jnp.zeros((batch, hidden)),
    jnp.zeros((batch, hidden)),
    jnp.ones((batch, steps), bool),
    jnp.ones((batch, input_size)),
    jnp.ones((batch, hidden)),
  )


def test_each_mode_is_reported_when_timed_before_its_reference_is_computed():
  """`measure` reports a mode's timing before it asks for the reference, and again with the error: a
  limit that cuts the (slow) reference keeps every timing. Any engine-signature function stands in for
  the kernels; ``fused`` against itself has no error."""
  args = _tiny_args()
  events = []
  references = mosaic_report.References(args, "tiny")

  def reference(mode):
    events.append(("reference", mode))
    return references(mode)

  mosaic_report.measure(
    fused.lstm, args, 1, reference, lambda mode, stats: events.append((mode, stats["max_rel_error_vs_fused"]))
  )
  assert [event[:2] if event[0] == "reference" else (event[0], event[1] is None) for event in events] == [
    item
    for mode in ("fwd", "final", "fwd_bwd")
    for item in ((mode, True), ("reference", mode), (mode, False))
  ]
  assert all(error < 1e-6 for mode, error in events if mode != "reference" and error is not None)


def test_references_are_kept_on_disk_per_shape(tmp_path, monkeypatch):
  """A second process's `References` over the same directory and shape reads fused's results back
  rather than compiling them again; another shape is computed anew."""
  args = _tiny_args()
  first = mosaic_report.References(args, "B2_T3", str(tmp_path))("final")
  assert (tmp_path / "fused_final_B2_T3.npz").exists()

  def no_compile(*_):
    raise AssertionError("computed again")

  monkeypatch.setattr(mosaic_report.References, "_compute", no_compile)
  again = mosaic_report.References(args, "B2_T3", str(tmp_path))("final")
  assert len(again) == len(first) and all((a == b).all() for a, b in zip(again, first))
  with pytest.raises(AssertionError, match="computed again"):
    mosaic_report.References(args, "B4_T3", str(tmp_path))("final")


@pytest.mark.skipif(mosaic_gpu.unavailable_reason() is not None, reason=str(mosaic_gpu.unavailable_reason()))
def test_the_driver_writes_the_prediction_beside_the_measurement(tmp_path):
  command = [
    "--cluster_sizes=1",
    "--precisions=bfloat16",
    "--layouts=units,batch",
  ]
  command += [
    "--batch=2",
    "--steps=2",
    "--input_size=4",
    "--hidden=4",
    "--repeats=1",
    f"--workdir={tmp_path}",
  ]
  result = drivers.run("seqclf.benchmarks.mosaic_sweep", *command)
  assert result.returncode == 0, result.stderr[-4000:]
  runs = json.loads((tmp_path / "mosaic_sweep.json").read_text())["runs"]
  shape = {
    "cluster_size": 1,
    "matmul_precision": "bfloat16",
    "batch": 2,
    "steps": 2,
    "input_size": 4,
    "hidden": 4,
  }
  for layout in ("units", "batch"):
    predicted = mosaic_report.predicted_us_per_step({**shape, "layout": layout})
    measured = {run["mode"]: run["predicted_us_per_step"] for run in runs if run["layout"] == layout}
    assert measured.keys() == predicted.keys(), layout
    for mode, expected in predicted.items():
      assert measured[mode] == pytest.approx(expected), (layout, mode)
    assert all("error" not in run for run in runs)
  assert "| µs/step | predicted µs/step |" in (tmp_path / "mosaic_sweep.md").read_text()


def test_the_dump_summary_reads_registers_spills_and_barriers(tmp_path):
  """From what ``ptxas -v`` and nvdisasm print (the formats of the CUDA toolkit's tools), per kernel in
  the order compiled; nothing found is said as nothing."""
  (tmp_path / "step_output.txt").write_text(
    "ptxas info    : Compiling entry function 'mosaic_gpu_kernel' for 'sm_90a'\n"
    "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    "ptxas info    : Used 168 registers, used 1 barriers, 400 bytes cmem[0]\n"
    "ptxas info    : Compiling entry function 'mosaic_gpu_kernel' for 'sm_90a'\n"
    "    8 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads\n"
    "ptxas info    : Used 255 registers, used 1 barriers, 400 bytes cmem[0]\n"
  )
  (tmp_path / "kernel.sass").write_text(
    '\t.section\t.text.mosaic_gpu_kernel,"ax",@progbits\n'
    "        /*0350*/                   BAR.SYNC.DEFER_BLOCKING 0x1, 0x80 ;\n"
    "        /*0360*/                   BAR.SYNC 0x1, 0x80 ;\n"
    "        /*0370*/                   BAR.ARV 0x2, 0x80 ;\n"
    '\t.section\t.text.mosaic_gpu_kernel,"ax",@progbits\n'
    "        /*0350*/                   BAR.SYNC.DEFER_BLOCKING 0x1, 0x80 ;\n"
  )
  assert mosaic_report.dump_summary(str(tmp_path)) == "registers 168/255; spilled bytes 0/32; BAR.SYNC 2/1"
  assert mosaic_report.dump_summary(str(tmp_path / "none")) == ""

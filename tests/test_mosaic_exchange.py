"""The exchange microbenchmark's kernels and driver, and the cluster ping-pong, off a GPU.

The Mosaic GPU interpreter runs no remote shared-memory stores, so here the kernels are lowered for CUDA
(`seqclf.lowering`) and the driver's rows say they were not run; on a GPU, `benchmarks/gpu_check.sh`
runs them (the ping-pong through `seqclf.benchmarks.gpu_probe pingpong`) and checks their results with
`exchange_expected` and `pingpong_expected`.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.benchmarks import gpu_probe, mosaic_report
from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_cost, mosaic_exchange, mosaic_gpu
from tests import drivers

needs_mosaic = pytest.mark.skipif(
  mosaic_gpu.unavailable_reason() is not None, reason=str(mosaic_gpu.unavailable_reason())
)


def test_the_patterns_differ_in_calls_only_with_two_pieces():
  """float32's hi and lo: two store calls per target before, one now (each arrives 128 times); bfloat16
  has one piece either way."""
  assert mosaic_exchange.calls_per_step("per_piece", 8, 2) == 16
  assert mosaic_exchange.calls_per_step("per_target", 8, 2) == 8
  assert mosaic_exchange.calls_per_step("per_piece", 8, 1) == mosaic_exchange.calls_per_step(
    "per_target", 8, 1
  )
  with pytest.raises(ConfigError, match="pattern"):
    mosaic_exchange.calls_per_step("per_warp", 8, 2)
  with pytest.raises(ConfigError, match="cluster of"):
    mosaic_exchange.exchange(1, 2, 4, "per_target")


def test_the_expected_results_are_what_the_kernels_compute_by_hand():
  """`exchange_expected`: every CTA holds every slice + (T - 1), hi over lo, hi + lo near the value;
  `pingpong_expected`: after r rounds CTA j holds CTA j - r's tile + r, exactly (bf16 integers)."""
  slices = mosaic_exchange.exchange_inputs(2)
  expected = mosaic_exchange.exchange_expected(slices, 2, 5).astype(np.float32)
  assert expected.shape == (2, 2 * 64, 128)
  whole = np.concatenate([np.asarray(s) for s in slices], axis=1) + 4
  np.testing.assert_allclose(expected[1, :64] + expected[1, 64:], whole, rtol=2**-16)
  tiles, identity = mosaic_exchange.pingpong_inputs(8)
  assert np.array_equal(np.asarray(identity, np.float32), np.eye(64))
  rounds = gpu_probe.PINGPONG_ROUNDS
  after = mosaic_exchange.pingpong_expected(tiles, rounds)
  start = np.asarray(tiles, np.float32)
  assert after.max() < 256 and np.array_equal(after[3], start[(3 - rounds) % 8] + rounds)
  assert not np.array_equal(after, start + rounds)  # the check sees a tile that did not travel
  assert np.array_equal(np.asarray(jnp.asarray(after).astype(jnp.bfloat16), np.float32), after)


@needs_mosaic
@pytest.mark.parametrize("kind", ["pingpong", *mosaic_exchange.PATTERNS])
def test_kernels_lower_for_cuda_with_remote_stores(kind):
  """N = 8 on this host's CUDA lowering: one Mosaic GPU call carrying st.async (DSMEM) and, for the
  ping-pong, the wgmma and the TMA copy its check relies on."""
  text = mosaic_exchange.lowered_text(kind, 8)
  assert text.count("stablehlo.custom_call @mosaic_gpu") == 1
  assert "st.async" in text


@needs_mosaic
def test_the_driver_off_a_gpu_lowers_every_pattern_and_says_it_did_not_run(tmp_path):
  """A row per (precision, pattern) with calls and arrivals per step and the forward's exchange term of
  `mosaic_cost` (low, high), no time, and why not; a fault injected into one pattern is its error row only."""
  unit = "mosaic_exchange N=8 float32 per_piece"
  result = drivers.run(
    "seqclf.benchmarks.mosaic_exchange",
    "--steps=4",
    f"--workdir={tmp_path}",
    env={"SEQCLF_GPU_CHECK_FAULTS": f"{unit}=raise"},
  )
  assert result.returncode == 0, result.stderr[-4000:]
  assert f"ERROR {unit}: RuntimeError: injected fault" in result.stderr
  runs = json.loads((tmp_path / "mosaic_exchange.json").read_text())["runs"]
  assert [(run["matmul_precision"], run["pattern"], run["arrivals_per_step"]) for run in runs] == [
    ("float32", "per_piece", 2048),
    ("float32", "per_target", 1024),
    ("bfloat16", "per_target", 1024),
  ]
  assert "error" in runs[0] and all("error" not in run for run in runs[1:])
  for run in runs[1:]:
    assert "us_per_step" not in run and run["note"].startswith("lowered for CUDA, not run")
    low, high = mosaic_cost.predict_range(8, run["matmul_precision"])
    assert run["model_us_per_step"] == [low.forward.exchange, high.forward.exchange]
  assert "| arrivals/step | µs/step | model µs/step |" in (tmp_path / "mosaic_exchange.md").read_text()


def test_a_timed_row_is_us_per_step_beside_the_model():
  shape = {"cluster_size": 8, "matmul_precision": "float32", "pattern": "per_target", "steps": 500}
  shape["calls_per_step"] = 8
  stats = {"median_s": 1e-3, "min_s": 1e-3, "max_s": 1e-3, "repeats": 1, "compile_s": 2.0}
  run, row = mosaic_report.exchange_result(shape, stats)
  assert run["us_per_step"] == pytest.approx(2.0) and row[5] == "2.000"
  low, high = mosaic_cost.predict_range(8, "float32")
  assert row[6] == f"{low.forward.exchange:.3f}-{high.forward.exchange:.3f}"
  assert low.forward.exchange < high.forward.exchange
  assert len(row) == len(mosaic_report.EXCHANGE_HEADER)

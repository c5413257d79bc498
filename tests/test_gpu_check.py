"""`benchmarks/gpu_check.sh` rehearsed on CPU: the same script as on a GPU, tiny sizes, and the faults a
first GPU run may meet injected on purpose (`seqclf/benchmarks/faults.py`): a step that hangs ignoring SIGINT
(its limit fires, SIGKILL follows, later steps still run), one that raises inside a driver (an error row,
the driver goes on), one whose process dies of a signal; and the script itself killed half-way (the
summary keeps what finished, and a SIGTERM marks the step it stopped). A broken import or flag of any step fails here too, not on a GPU.

Where this jax has Mosaic GPU (jax 0.11, the GPU machine's), the mosaic steps run interpreted and the
hang is put in one of them; elsewhere they are skipped with the reason and the hang goes into a sweep
shape.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from seqclf.rnn.engines import mosaic_gpu

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
MOSAIC = mosaic_gpu.unavailable_reason() is None
# How long a hung step gets before SIGINT: enough to start Python and JAX and reach the fault, loaded.
HANG_LIMIT_S = 45


def _env(tmp_path, archive, **extra):
  return {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "SEQCLF_GPU_CHECK_OUT": str(tmp_path / "out"),
    "SEQCLF_GPU_CHECK_BUNDLE": str(tmp_path / "no_bundle"),
    "SEQCLF_IMDB": str(archive),
    "PYTHON": sys.executable,
    "SEQCLF_GPU_CHECK_KILL_AFTER_S": "2",
    **extra,
  }


def _summary(out):
  return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_rehearsal_survives_a_hang_an_exception_and_a_signal(tmp_path, tiny_aclimdb_archive):
  """Marked ``slow``: the whole check, a dozen processes and a hang held for its limit (~2 min). CI runs
  it on the default stack, with PyTorch (the peer steps), and on the GPU machine's stack, where the Mosaic
  steps run interpreted."""
  hang_unit, hang_step = (
    ("mosaic_sweep N=2 bfloat16", "mosaic N=2 bfloat16")
    if MOSAIC
    else ("lstm_engines flax B4 T3 H4", "sweep B=4 H=4")
  )
  faults = {
    "lstm_engines fused B2 T3 H4": "raise",
    "article cnn_lstm fused": "signal",  # after the lstm run, whose results must be kept
    hang_unit: "hang",
  }
  env = _env(
    tmp_path,
    tiny_aclimdb_archive,
    SEQCLF_GPU_CHECK_FAULTS=",".join(f"{unit}={kind}" for unit, kind in faults.items()),
    SEQCLF_GPU_CHECK_LIMITS=f"{hang_step}={HANG_LIMIT_S}",
  )
  result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
  out = tmp_path / "out"
  log = (out / "log.txt").read_text()
  summary = _summary(out)
  steps = {step["step"]: step for step in summary["steps"]}
  statuses = {name: step["status"] for name, step in steps.items()}
  assert result.returncode == 1, result.stdout + log[-4000:]  # a step timed out and one crashed
  expected = {
    "install": "skipped",
    "preflight nvidia-smi": "skipped",
    "preflight versions": "ok",
    "preflight devices": "ok",
    "preflight cuda": "ok",
    "preflight imports": "ok",
    "tests": "skipped",
    **(
      {
        "smoke": "ok",
        "pingpong": "ok",
        "exchange": "ok",
        "mosaic N=2 bfloat16": "",
        "mosaic N=1 bfloat16": "ok",
      }
      if MOSAIC
      else {"mosaic": "skipped"}
    ),
    "article fused resident": "CRASH (SIGSEGV)",
    "sweep B=2 H=4": "ok, 1 error row",
    "sweep B=4 H=4": "ok",
  }
  expected[hang_step] = f"TIMEOUT ({HANG_LIMIT_S} s, SIGKILL after 2 s more)"
  assert statuses == expected, result.stdout + log[-4000:]
  assert summary["finished"] is True and summary["platform"] == "cpu"
  # Each fault happened where it was put, and each row says what happened.
  for unit, kind in faults.items():
    assert f"injected fault: {unit}={kind}" in log
  assert "RuntimeError: injected fault in lstm_engines fused B2 T3 H4" in steps["sweep B=2 H=4"]["detail"]
  sweep = json.loads((out / "lstm_engines.json").read_text())
  timed = {(run["engine"], run["batch"], "error" in run) for run in sweep["runs"]}
  assert {entry for entry in timed if entry[1] == 2} >= {
    ("scan", 2, False),
    ("flax", 2, False),
    ("fused", 2, True),
  }
  assert bool({entry for entry in timed if entry[1] == 4}) == MOSAIC  # B = 4 hung where Mosaic is absent
  # What finished before a fault is kept: the article's lstm run before its process died, and with
  # Mosaic the configuration after the one that hung.
  article = json.loads((out / "article.json").read_text())
  assert ("lstm", "fused") in {(run["variant"], run["engine"]) for run in article["runs"]}
  assert "cnn_lstm" not in {run["variant"] for run in article["runs"]}
  if MOSAIC:
    assert {run["cluster_size"] for run in json.loads((out / "mosaic_sweep.json").read_text())["runs"]} == {1}
    # Off a GPU the ping-pong and the exchange are lowered for CUDA, and their rows say so.
    assert "lowered for CUDA (N = 8), not run" in steps["pingpong"]["detail"]
    exchange = json.loads((out / "mosaic_exchange.json").read_text())["runs"]
    assert len(exchange) == 3 and all(run["note"].startswith("lowered for CUDA") for run in exchange)
  assert len(list(out.iterdir())) <= 8
  markdown = (out / "summary.md").read_text()
  assert markdown in result.stdout and "| article fused resident | CRASH (SIGSEGV) |" in markdown
  assert (
    "## engine sweep (benchmarks.lstm_engines)" in markdown
    and "## article: article fused resident" in markdown
  )


@pytest.mark.slow
@pytest.mark.skipif(not MOSAIC, reason="this jax has no Pallas Mosaic GPU: the check plans no ping-pong")
def test_a_ping_pong_that_fails_skips_the_mosaic_steps_only(tmp_path, tiny_aclimdb_archive):
  """Marked ``slow`` (a check without the article, ~1 min). The cluster ping-pong dying of a signal (as a
  kernel's fault would) is that step's row; the exchange and every mosaic configuration are skipped
  naming it, and the steps without clusters still run."""
  env = _env(
    tmp_path, tiny_aclimdb_archive, SEQCLF_GPU_CHECK_FAULTS="gpu_probe pingpong=signal", SEQCLF_IMDB=""
  )
  result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
  out = tmp_path / "out"
  steps = {step["step"]: step for step in _summary(out)["steps"]}
  log = (out / "log.txt").read_text()
  assert result.returncode == 1, result.stdout + log[-4000:]
  assert steps["smoke"]["status"] == "ok" and steps["pingpong"]["status"] == "CRASH (SIGSEGV)"
  for name in ("exchange", "mosaic N=2 bfloat16", "mosaic N=1 bfloat16"):
    assert steps[name]["status"] == "skipped"
    assert steps[name]["detail"] == "the cluster ping-pong did not pass (CRASH (SIGSEGV))"
  assert steps["sweep B=2 H=4"]["status"] == "ok" and steps["sweep B=4 H=4"]["status"] == "ok"
  assert not (out / "mosaic_sweep.json").exists() and not (out / "mosaic_exchange.json").exists()


def test_a_killed_check_keeps_what_finished(tmp_path, tiny_aclimdb_archive):
  """The summary on disk while the check runs holds every finished step and names the one in flight, so a
  SIGKILL loses nothing that finished; a SIGTERM (a machine's limit, ^C) also marks the step it stopped."""
  out = tmp_path / "out"
  check = subprocess.Popen(
    ["bash", str(SCRIPT)],
    env=_env(tmp_path, tiny_aclimdb_archive),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )
  try:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
      try:
        on_disk = _summary(out)
      except (OSError, ValueError):
        on_disk = {"steps": []}
      in_flight = [step["step"] for step in on_disk["steps"] if step["status"] == "RUNNING"]
      if in_flight and not in_flight[0].startswith("preflight"):
        break
      time.sleep(0.5)
    else:
      raise AssertionError("the check never got past its preflight")
    # What a SIGKILL now would leave: the preflight finished, the next step in flight.
    statuses = {step["step"]: step["status"] for step in on_disk["steps"]}
    assert on_disk["finished"] is False
    assert {name: status for name, status in statuses.items() if name.startswith("preflight")} == {
      "preflight nvidia-smi": "skipped",
      "preflight versions": "ok",
      "preflight devices": "ok",
      "preflight cuda": "ok",
      "preflight imports": "ok",
    }
    assert list(statuses.values())[-1] == "RUNNING"
    check.send_signal(signal.SIGTERM)  # to the script alone; it stops its step's process itself
    assert check.wait(timeout=60) == 130
  finally:
    try:  # whatever of the check's processes is left
      os.killpg(check.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    check.wait()
  summary = _summary(out)
  last = summary["steps"][-1]
  assert (last["step"], last["status"]) == (in_flight[0], "INTERRUPTED (check got SIGTERM)")
  assert summary["finished"] is False
  assert f"| {in_flight[0]} | INTERRUPTED (check got SIGTERM) |" in (out / "summary.md").read_text()

"""`benchmarks/gpu_check.sh`'s CPU dry run: the same script as on the GPU, tiny sizes, so a broken import or
flag in any step fails here and not in a device call."""

import os
import pathlib
import subprocess
import sys

from seqclf.lstm import mosaic_gpu

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_dry_run_runs_every_step_but_the_gpu_only_one(tmp_path, tiny_aclimdb_archive):
  out = tmp_path / "out"
  result = subprocess.run(
    ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
    env={
      **os.environ,
      "JAX_PLATFORMS": "cpu",
      "OUT": str(out),
      "WHEELS": str(tmp_path / "no_wheels"),
      "IMDB": str(tiny_aclimdb_archive),
      "PYTHON": sys.executable,
    },
    capture_output=True,
    text=True,
    timeout=400,
  )
  log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
  assert result.returncode == 0, result.stdout + log[-4000:]
  lines = result.stdout.splitlines()
  table = lines[lines.index("| step | status | s | detail |") + 2 :]  # the summary table ends the output
  rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table}
  # The mosaic sweep runs (interpreted, tiny) where this jax has Mosaic GPU, else is skipped with the reason.
  mosaic = mosaic_gpu.unavailable_reason() is None
  assert rows == {
    "install": "skipped",
    "preflight": "ok",
    "tests": "skipped",
    "sweep": "ok",
    "mosaic": "ok" if mosaic else "skipped",
    "article": "ok",
  }
  written = sorted(path.name for path in out.rglob("*") if path.is_file())
  assert written == [
    "article.json",
    "article.md",
    "log.txt",
    "lstm_engines.json",
    "lstm_engines.md",
    *(["mosaic_sweep.json", "mosaic_sweep.md"] if mosaic else []),
    "summary.txt",
  ]
  assert (out / "summary.txt").read_text() == result.stdout

"""`seqclf.benchmarks.scaling`: weak and strong scaling over forced CPU devices, through the command line.

Only through the command line: the drivers' flags live in one absl registry per process, and
`seqclf.benchmarks.lstm_engines` (imported by its tests) defines ``--steps`` and ``--repeats`` too.
"""

import json

from tests import drivers


def test_weak_and_strong_scaling_over_two_forced_devices(tmp_path):
  command = ["--config=seqclf/configs/tiny.py", "--per_device_batch=2", "--steps=8", "--repeats=1"]
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = drivers.run("seqclf.benchmarks.scaling", *command, f"--workdir={tmp_path}", env=env)
  assert result.returncode == 0, result.stderr
  written = json.loads((tmp_path / "scaling.json").read_text())
  assert written["kind"] == "scaling" and written["meta"]["device"]["count"] == 2
  points = [(r["devices"], r["mode"], r["per_device_batch"], r["global_batch"]) for r in written["runs"]]
  # Weak: the per-device batch stays 2; strong: the 1-device global batch (2) is split over 2 devices.
  assert points == [(1, "weak", 2, 2), (1, "strong", 2, 2), (2, "weak", 2, 4), (2, "strong", 1, 2)]
  for run in written["runs"]:
    assert run["efficiency"] > 0 and run["examples_per_s"] == run["global_batch"] / run["median_s"]
    if run["devices"] == 1:
      assert run["efficiency"] == 1.0
  assert (tmp_path / "scaling.md").read_text().startswith("| devices | per-device B |")

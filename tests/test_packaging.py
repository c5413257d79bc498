"""The wheel and the sdist build, and the wheel works in a fresh venv outside the checkout: every console
script answers ``--help`` and ``seqclf-train`` trains a tiny model there (marker ``wheel``: deselect with
``-m "not wheel"``). Marked ``slow``: building both and a venv takes about a minute, and what it proves
(the package's files and entry points) does not change with the Python or jax version, so CI runs it on
the default stack only."""

import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

from tests.test_main import write_topics_csv

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = {
  "seqclf-train": "--workdir",
  "seqclf-predict": "--workdir",
  "seqclf-article": "--variants",
  "seqclf-lstm-engines": "--engines",
  "seqclf-scaling": "--device_counts",
  "seqclf-compare": "--baseline",
  "seqclf-mosaic-sweep": "--cluster_sizes",
  "seqclf-mosaic-exchange": "--cluster_size",
}

pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def declared_scripts():
  import tomllib

  with open(REPO / "pyproject.toml", "rb") as f:
    return set(tomllib.load(f)["project"]["scripts"])


def run(command, cwd, env=None, timeout=600):
  result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
  assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
  return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """A fresh venv outside the checkout with the built wheel installed; the dependencies are the test
  environment's own (a .pth line to its site-packages), so nothing is downloaded for them."""
  pytest.importorskip("build")
  root = tmp_path_factory.mktemp("wheel")
  dist = root / "dist"
  run([sys.executable, "-m", "build", f"--outdir={dist}", str(REPO)], cwd=root)
  (wheel,) = dist.glob("seqclf-*.whl")
  (sdist,) = dist.glob("seqclf-*.tar.gz")
  assert sdist.stat().st_size > 0
  env_dir = root / "venv"
  run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
  python = env_dir / "bin" / "python"
  site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root).stdout
  pathlib.Path(site.strip(), "test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
  run(
    [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
    cwd=root,
  )
  return env_dir


def clean_env():
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEQCLF_IMDB")}
  return {**env, "JAX_PLATFORMS": "cpu"}


def test_only_seqclf_is_installed(venv):
  site = pathlib.Path(
    run(
      [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv
    ).stdout.strip()
  )
  packages = {path.name for path in site.iterdir() if not path.name.endswith((".dist-info", ".pth"))}
  assert packages == {"seqclf"}
  assert (site / "seqclf" / "configs" / "tiny.py").exists()
  shipped = {path.name for path in (site / "seqclf" / "rnn" / "engines" / "cpu_kernel_src").iterdir()}
  assert shipped == {"cpu_kernel.cc", "products.h", "common.h", "lstm.h", "gru.h"}


def test_every_console_script_answers_help(venv, tmp_path):
  assert set(SCRIPTS) == declared_scripts()
  for script, flag in SCRIPTS.items():
    result = run([str(venv / "bin" / script), "--help"], cwd=tmp_path, env=clean_env())
    assert flag in result.stdout, (script, result.stdout[:2000])
    assert "--preset" not in result.stdout or script != "seqclf-compare"  # only the flags it has
    if script == "seqclf-compare":
      assert result.stdout.startswith("Puts benchmark results from several devices side by side")


def test_a_tiny_training_run_outside_the_checkout(venv, tmp_path):
  train = write_topics_csv(tmp_path / "train.csv", 60)
  test = write_topics_csv(tmp_path / "test.csv", 20, seed=1)
  workdir = tmp_path / "run"
  command = [str(venv / "bin" / "seqclf-train"), f"--workdir={workdir}", f"--train_file={train}"]
  run(
    [*command, f"--test_file={test}", "--config=tiny", "--tensorboard=false"], cwd=tmp_path, env=clean_env()
  )
  assert (workdir / "results.json").exists() and (workdir / "logs" / "metrics.jsonl").exists()
  result = run(
    [str(venv / "bin" / "seqclf-predict"), f"--workdir={workdir}", "goal match"], tmp_path, clean_env()
  )
  assert result.stdout.strip()

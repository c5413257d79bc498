"""Optional dependencies load where they are used: without them every module imports, and the feature
that needs one says which extra to install, in one line.

Each case runs Python in a subprocess whose ``sitecustomize`` makes the optional modules unimportable
(as if never installed), so the drivers are checked as a user without the extras would run them.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from seqclf import optional
from seqclf.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent

# Top-level modules of the extras tfds, tensorboard, plots and peers.
OPTIONAL_MODULES = (
  "tensorflow_datasets",
  "importlib_resources",
  "array_record",
  "tensorboardX",
  "matplotlib",
  "torch",
  "keras",
)

# Every module a user or a driver imports first.
ENTRY_MODULES = (
  "seqclf.rnn",
  "seqclf.models",
  "seqclf.train",
  "seqclf.main",
  "seqclf.predict",
  "seqclf.metric_writers",
  "seqclf.data.imdb",
  "seqclf.benchmarks.article",
  "seqclf.benchmarks.lstm_engines",
  "seqclf.benchmarks.scaling",
  "seqclf.benchmarks.compare",
)

_BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class _NotInstalled(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture
def without_extras(tmp_path):
  """Runs ``python args...`` from the repository with the optional modules uninstalled."""
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(_BLOCKER.format(blocked=OPTIONAL_MODULES))

  def run(*args):
    return subprocess.run(
      [sys.executable, *args],
      cwd=REPO,
      env={**os.environ, "PYTHONPATH": f"{site}:{REPO}", "JAX_PLATFORMS": "cpu"},
      capture_output=True,
      text=True,
      timeout=300,
    )

  return run


@pytest.mark.parametrize("module", ENTRY_MODULES)  # one process each: every driver defines --config
def test_every_module_imports_without_the_extras(without_extras, module):
  script = f"import importlib, sys; importlib.import_module({module!r}); print(' '.join(sys.modules))"
  result = without_extras("-c", script)
  assert result.returncode == 0, result.stderr
  assert not {name.split(".")[0] for name in result.stdout.split()} & set(OPTIONAL_MODULES)


def test_the_lstm_alone_needs_only_jax_and_flax(without_extras):
  script = "import sys, seqclf.rnn; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
  result = without_extras("-c", script)
  assert result.returncode == 0, result.stderr
  assert not set(result.stdout.split()) & {"ml_collections", "orbax", "optax", *OPTIONAL_MODULES}


def _one_error_line(result) -> str:
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def test_compare_without_matplotlib_names_the_plots_extra(without_extras, tmp_path):
  article = REPO / "benchmarks" / "results" / "2026-11-28_cpu-epyc-2core_article" / "results.json"
  result = without_extras("-m", "seqclf.benchmarks.compare", str(article), f"--out={tmp_path / 'out'}")
  assert "pip install 'seqclf[plots]'" in _one_error_line(result)
  assert not (tmp_path / "out").exists()  # nothing half-written


def test_tfds_without_tensorflow_datasets_names_the_tfds_extra(without_extras, tmp_path):
  result = without_extras(
    "-m", "seqclf.benchmarks.article", "--imdb=tfds", f"--workdir={tmp_path}", "--variants=lstm", "--epochs=1"
  )
  assert "pip install 'seqclf[tfds]'" in _one_error_line(result)


def test_tensorboard_logs_without_tensorboardx(without_extras, tmp_path):
  script = textwrap.dedent(f"""
    from seqclf import metric_writers
    writer = metric_writers.create_default_writer({str(tmp_path)!r})
    writer.write_scalars(1, {{"train/loss": 0.5}})
    writer.close()
    metric_writers.TensorBoardWriter({str(tmp_path)!r})
  """)
  result = without_extras("-c", script)
  assert "pip install 'seqclf[tensorboard]'" in result.stderr  # the fallback's warning, then the error
  assert "ConfigError: TensorBoard logs needs tensorboardX" in result.stderr
  assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train/loss": 0.5}\n'


def test_require_names_the_extra_and_the_missing_module():
  assert optional.require("json", "unused").dumps([]) == "[]"
  with pytest.raises(
    ConfigError, match=r"^--x needs no-such-module, which is not installed; pip install 'seqclf\[x\]'$"
  ):
    optional.require("no-such-module", "x", feature="--x")
  assert optional.available("json") and not optional.available("no_such_module.sub")

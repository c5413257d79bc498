"""Importing the library changes nothing in the user's process, and the layers import only downwards.

Every ``seqclf`` module but the drivers is imported in a fresh process: no absl flag may be defined and no
environment variable set (flags belong to the drivers, or to ``define_flags()`` functions drivers call).
The import graph is read from the source: a module imports only modules of its own layer or lower ones,
in the order of `LAYERS` (WORKSPACE.md's data flow).
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "seqclf"

# Modules that define their flags when imported: the command-line drivers.
DRIVERS = {
  "seqclf.main",
  "seqclf.benchmarks.article",
  "seqclf.benchmarks.lstm_engines",
  "seqclf.benchmarks.scaling",
  "seqclf.benchmarks.mosaic_sweep",
  "seqclf.benchmarks.mosaic_exchange",
  "seqclf.benchmarks.compare.__main__",
  "seqclf.benchmarks.merge_results",
}
# Modules that import an optional framework at the top (extra ``peers``).
OPTIONAL = {"seqclf.benchmarks.peers.torch_models": "torch", "seqclf.benchmarks.peers.keras_models": "keras"}

# Layers, lowest first; a module belongs to the first layer whose prefix it starts with.
LAYERS = [
  ("base", ["seqclf", "seqclf.dirs", "seqclf.errors", "seqclf.atomic", "seqclf.optional", "seqclf.lowering"]),
  ("data", ["seqclf.data"]),
  ("rnn", ["seqclf.rnn", "seqclf.lstm"]),
  ("models", ["seqclf.models"]),
  (
    "support",
    [
      "seqclf.parallel",
      "seqclf.memory",
      "seqclf.progress",
      "seqclf.profiling",
      "seqclf.timing",
      "seqclf.presets",
    ]
    + [
      "seqclf.results",
      "seqclf.metric_writers",
      "seqclf.checkpoint",
      "seqclf.run_identity",
      "seqclf.feeding",
    ],
  ),
  ("train", ["seqclf.train"]),
  ("cli", ["seqclf.cli", "seqclf.configs", "seqclf.imdb_flags"]),
  ("drivers", ["seqclf.main", "seqclf.predict", "seqclf.benchmarks"]),
]


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> list[str]:
  return sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def layer(module: str) -> int:
  for index, (_, prefixes) in enumerate(LAYERS):
    if any(
      module == prefix or (prefix != "seqclf" and module.startswith(prefix + ".")) for prefix in prefixes
    ):
      return index
  raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add it to LAYERS")


def imported_modules(path: pathlib.Path) -> set[str]:
  """The seqclf modules ``path`` imports, at any depth of its code (lazy imports count too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names |= {f"{node.module}.{alias.name}" for alias in node.names}
  known = set(all_modules())
  return {name for name in names if name in known}


def test_every_module_has_a_layer():
  for module in all_modules():
    layer(module)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_higher_layer(path):
  module = module_name(path)
  upward = sorted(name for name in imported_modules(path) if layer(name) > layer(module))
  assert not upward, f"{module} ({LAYERS[layer(module)][0]}) imports higher layers: {upward}"


def third_party_imports(modules: list[str]) -> list[str]:
  """The modules outside seqclf that ``modules`` import at their top level (imported first by the probe,
  so that what a dependency defines or sets when imported is not charged to seqclf)."""
  names = set()
  for module in modules:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    path = path if path.exists() else PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.Import):
        names |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
  return sorted(name for name in names if name.split(".")[0] != "seqclf")


PROBE = """
import importlib, json, os, sys
from absl import flags
third_party, ours = sys.argv[1].split(","), sys.argv[2].split(",")
for name in third_party:
  try:
    importlib.import_module(name)
  except ImportError:
    pass  # a name imported from a module rather than a submodule, or an optional extra
environ, defined = dict(os.environ), set(flags.FLAGS)
for name in ours:
  importlib.import_module(name)
changed = sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k))
print(json.dumps({"flags": sorted(set(flags.FLAGS) - defined), "environ": changed}))
"""


def test_importing_the_library_defines_no_flag_and_changes_no_environment():
  modules = [name for name in all_modules() if name not in DRIVERS]
  # One clean environment for both probes: another test may have set, say, KERAS_BACKEND in this process.
  env = {"PATH": "/usr/bin:/bin", "HOME": str(pathlib.Path.home()), "JAX_PLATFORMS": "cpu"}
  missing = [
    name
    for name, package in OPTIONAL.items()
    if subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True, env=env).returncode
  ]
  modules = [name for name in modules if name not in missing]
  result = subprocess.run(
    [sys.executable, "-c", PROBE, ",".join(third_party_imports(modules)), ",".join(modules)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env=env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {"flags": [], "environ": []}


def test_the_probe_sees_a_flag_and_an_environment_variable():
  """The probe above can fail: a module defining a flag and setting a variable at import is caught."""
  probe = PROBE.replace(
    "for name in ours:\n  importlib.import_module(name)", "flags.DEFINE_bool('x', 0, '');os.environ['Y']='1'"
  )
  result = subprocess.run(
    [sys.executable, "-c", probe, "json", "json"], capture_output=True, text=True, cwd=REPO
  )
  assert json.loads(result.stdout) == {"flags": ["x"], "environ": ["Y"]}

"""The results schema shared by every driver: run metadata, atomic writes, markdown tables.

A results file is JSON::

  {"schema_version": 1,
   "kind": "article" | "lstm_engines" | ...,        # which driver wrote it
   "meta": {...},                                    # see collect_meta()
   "runs": [...]}                                    # driver-specific entries, documented in WORKSPACE.md

Files are written to a temporary file in the same directory and renamed, so a reader (or a run that is
killed) never sees a half-written file.
"""

import datetime
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata

import jax

from seqclf.atomic import write_atomically
from seqclf.errors import UsageError

SCHEMA_VERSION = 1
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml-collections", "tensorflow-datasets")


def write_text_atomic(path: str, text: str, flag: str = "--workdir") -> None:
  """Writes ``text`` to ``path`` atomically, creating its directory; ``flag`` names where it came from."""
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
  except OSError as e:
    raise UsageError(f"cannot write {path}: {e.strerror}; pass a writable {flag}") from e


def write_json_atomic(path: str, obj) -> None:
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def load(path: str) -> dict:
  """Reads a results file, refusing ones from another schema version."""
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UsageError(f"cannot read results file {path}: {e}") from e
  except UnicodeDecodeError as e:
    raise UsageError(
      f"{path} is not a results file (not UTF-8 text: byte {e.object[e.start]:#04x} at offset {e.start}): "
      "pass a results.json a benchmark wrote, or its workdir"
    ) from e
  version = results.get("schema_version") if isinstance(results, dict) else None
  if version != SCHEMA_VERSION:
    raise UsageError(
      f"{path} has results schema version {version!r}, this seqclf reads "
      f"{SCHEMA_VERSION}; re-run the benchmark that wrote it"
    )
  return results


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _git_state() -> dict:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args):
    return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

  try:
    commit = git("rev-parse", "HEAD")
    if commit.returncode != 0:
      return {"commit": None, "dirty": None}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    return {"commit": commit.stdout.strip(), "dirty": dirty}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def command_line(argv: list[str]) -> list[str]:
  """``argv`` as a command to repeat, without this machine's paths: the program becomes the module it ran
  (``seqclf.benchmarks.article`` for ``python -m`` or a path into the package) or the console script's
  name; the arguments stay as the user gave them."""
  if not argv:
    return []
  program = os.path.abspath(argv[0])
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding seqclf/
  if program.endswith(".py") and program.startswith(os.path.join(package, "seqclf") + os.sep):
    module = os.path.relpath(program, package).removesuffix(".py").replace(os.sep, ".")
    return ["python", "-m", module.removesuffix(".__main__").removesuffix(".__init__"), *argv[1:]]
  return [os.path.basename(argv[0]), *argv[1:]]


def collect_meta(config=None, flags=None) -> dict:
  """Everything needed to compare a result with one from another machine or commit."""
  devices = jax.devices()
  versions = {"python": platform.python_version()}
  for name in _PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "host": socket.gethostname(),
    "cpu": _cpu_model(),
    "cpu_count": os.cpu_count(),
    "device": {
      "platform": devices[0].platform,
      "kind": devices[0].device_kind,
      "count": len(devices),
      "process_count": jax.process_count(),
    },
    "versions": versions,
    "git": _git_state(),
    "argv": command_line(sys.argv),
    "flags": flags or {},
    "config": config.to_dict() if hasattr(config, "to_dict") else config,
  }


def flatten(tree: dict, prefix: str = "") -> dict:
  """``{"model": {"engine": x}}`` -> ``{"model.engine": x}``: a config's keys as ``--config.*`` names them."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def differences(before: dict, now: dict) -> list[str]:
  """``key: old -> new`` for every key whose value differs between two (nested) dicts, keys sorted."""
  before, now = flatten(before), flatten(now)
  show = lambda tree, key: repr(tree[key]) if key in tree else "(absent)"
  return [
    f"{key}: {show(before, key)} -> {show(now, key)}"
    for key in sorted(before.keys() | now.keys())
    if show(before, key) != show(now, key)
  ]


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"

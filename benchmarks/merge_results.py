r"""Merges the results files of several invocations of one driver into one file (and one table).

  python -m benchmarks.merge_results --inputs=a/mosaic_sweep.json,b/mosaic_sweep.json \
      --out=mosaic_sweep.json --markdown_out=mosaic_sweep.md

`benchmarks/gpu_check.sh` runs each configuration or shape in its own process, so that a hang or a GPU
fault costs that one only; this puts their rows back together. The inputs must be of one kind (schema
v1); the merged file has the first input's meta, each input's ``meta.flags`` under ``meta.parts``, and
every input's runs in order. It imports no JAX, so it costs the check well under a second. ``--markdown_out``: the tables beside the inputs (``X.md`` beside ``X.json``,
one header, as the driver writes them) as one table. An input that does not exist (its process died
before writing it) is left out; none at all is an error.
"""

import json
import os

from absl import flags

from seqclf import cli
from seqclf.atomic import write_atomically
from seqclf.errors import UsageError

_INPUTS = flags.DEFINE_list("inputs", None, "Results files of one kind, in order.", required=True)
_OUT = flags.DEFINE_string("out", None, "The merged results file.", required=True)
_MARKDOWN_OUT = flags.DEFINE_string("markdown_out", "", "The merged markdown table (optional).")


def merge(paths: list[str]) -> dict:
  """The merged results of the files in ``paths`` that exist."""
  loaded = []
  for path in filter(os.path.exists, paths):
    try:
      with open(path) as f:
        loaded.append(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
      raise UsageError(f"cannot read results file {path}: {e}") from e
  if not loaded:
    raise UsageError(f"none of {', '.join(paths)} exists; nothing to merge")
  kinds = {(part.get("schema_version"), part.get("kind")) for part in loaded}
  if len(kinds) > 1:
    raise UsageError(
      f"the inputs hold results of different schema versions or kinds: {sorted(map(str, kinds))}"
    )
  meta = {**loaded[0]["meta"], "parts": [part["meta"].get("flags") for part in loaded]}
  return {
    "schema_version": loaded[0]["schema_version"],
    "kind": loaded[0]["kind"],
    "meta": meta,
    "runs": [run for part in loaded for run in part["runs"]],
  }


def merge_tables(paths: list[str]) -> str:
  """One markdown table from the driver tables beside ``paths`` (header and rule once)."""
  header, rows = [], []
  for path in paths:
    table = os.path.splitext(path)[0] + ".md"
    if os.path.exists(table):
      with open(table) as f:
        lines = f.read().splitlines()
      header = header or lines[:2]
      rows += lines[2:]
  return "\n".join(header + rows) + "\n" if header else ""


def _write(path: str, text: str) -> None:
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
  except OSError as e:
    raise UsageError(f"cannot write {path}: {e.strerror}") from e


def main(argv):
  cli.require_no_arguments(argv)
  merged = merge(_INPUTS.value)
  _write(_OUT.value, json.dumps(merged, indent=1) + "\n")
  if _MARKDOWN_OUT.value:
    _write(_MARKDOWN_OUT.value, merge_tables(_INPUTS.value))
  print(f"wrote {_OUT.value}: {len(merged['runs'])} runs from {len(merged['meta']['parts'])} files")


if __name__ == "__main__":
  cli.run(main)

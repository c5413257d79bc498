r"""Merges the results files of several invocations of one driver into one file (and one table).

  python -m seqclf.benchmarks.merge_results --parts=a/mosaic_sweep.json,b/mosaic_sweep.json \
      --merged=mosaic_sweep.json --merged_markdown=mosaic_sweep.md

`benchmarks/gpu_check.sh` runs each configuration or shape in its own process, so that a hang or a GPU
fault costs that one only; this puts their rows back together. The inputs must be of one kind (schema
v1); the merged file has the first input's meta, each input's ``argv``, ``flags`` and ``config`` under
``meta.parts``, and every input's runs in order, each with ``part``, its input's index. ``--merged_markdown``:
the tables beside the inputs (``X.md`` beside ``X.json``, one header, as the driver writes them) as one
table. An input that does not exist (its process died before writing it) is left out; none at all is an
error. It imports no JAX, so it costs the check well under a second.
"""

import json
import os

from absl import flags

from seqclf import cli
from seqclf.atomic import write_atomically
from seqclf.errors import UsageError

# What tells the parts apart (say a device-resident article epoch from a host-fed one).
PART_KEYS = ("argv", "flags", "config")

# Names of their own: a test process imports this beside the other drivers, whose flags share one registry.
_PARTS = flags.DEFINE_list("parts", [], "Results files of one kind, in order (required).")
_MERGED = flags.DEFINE_string("merged", "", "The merged results file (required).")
_MERGED_MARKDOWN = flags.DEFINE_string("merged_markdown", "", "The merged markdown table (optional).")


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
  parts = [{key: part["meta"][key] for key in PART_KEYS if key in part["meta"]} for part in loaded]
  return {
    "schema_version": loaded[0]["schema_version"],
    "kind": loaded[0]["kind"],
    "meta": {**loaded[0]["meta"], "parts": parts},
    "runs": [{**run, "part": index} for index, part in enumerate(loaded) for run in part["runs"]],
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
  if not _PARTS.value or not _MERGED.value:
    raise UsageError("pass --parts=A.json,B.json,... and --merged=OUT.json")
  merged = merge(_PARTS.value)
  _write(_MERGED.value, json.dumps(merged, indent=1) + "\n")
  if _MERGED_MARKDOWN.value:
    _write(_MERGED_MARKDOWN.value, merge_tables(_PARTS.value))
  print(f"wrote {_MERGED.value}: {len(merged['runs'])} runs from {len(merged['meta']['parts'])} files")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

"""`seqclf/benchmarks/merge_results.py`: the GPU check's per-process results files put back together."""

import json

import pytest

from seqclf.benchmarks import merge_results
from seqclf.errors import UsageError
from tests import drivers


def _part(directory, kind, flags, runs, table_rows):
  directory.mkdir()
  path = directory / f"{kind}.json"
  meta = {"argv": ["driver", *flags], "flags": {"flags": flags}, "host": str(directory)}
  path.write_text(json.dumps({"schema_version": 1, "kind": kind, "meta": meta, "runs": runs}))
  (directory / f"{kind}.md").write_text(
    "| a | b |\n|---|---|\n" + "".join(f"| {row} | x |\n" for row in table_rows)
  )
  return str(path)


def test_parts_merge_in_order_and_a_missing_one_is_left_out(tmp_path):
  first = _part(tmp_path / "n8", "mosaic_sweep", ["--cluster_sizes=8"], [{"cluster_size": 8}], [8])
  missing = str(tmp_path / "n4" / "mosaic_sweep.json")  # its process died before writing
  second = _part(tmp_path / "n2", "mosaic_sweep", ["--cluster_sizes=2"], [{"cluster_size": 2}], [2])
  merged = merge_results.merge([first, missing, second])
  assert merged["kind"] == "mosaic_sweep" and merged["meta"]["host"] == str(tmp_path / "n8")
  assert [part["argv"][1] for part in merged["meta"]["parts"]] == ["--cluster_sizes=8", "--cluster_sizes=2"]
  assert merged["runs"] == [{"cluster_size": 8, "part": 0}, {"cluster_size": 2, "part": 1}]
  assert (
    merge_results.merge_tables([first, missing, second]) == "| a | b |\n|---|---|\n| 8 | x |\n| 2 | x |\n"
  )


def test_different_kinds_or_nothing_to_merge_are_one_line_errors(tmp_path):
  sweep = _part(tmp_path / "a", "mosaic_sweep", [], [], [])
  article = _part(tmp_path / "b", "article", [], [], [])
  with pytest.raises(UsageError, match="different schema versions or kinds"):
    merge_results.merge([sweep, article])
  with pytest.raises(UsageError, match="nothing to merge"):
    merge_results.merge([str(tmp_path / "none.json")])


@pytest.mark.parametrize(
  "args, expected",
  [([], "pass --parts="), (["--parts=/nonexistent/a.json", "--merged=/tmp/m.json"], "nothing to merge")],
)
def test_the_command_line_answers_bad_input_with_one_line(args, expected):
  result = drivers.run("seqclf.benchmarks.merge_results", *args, timeout=120)
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: ") and expected in line

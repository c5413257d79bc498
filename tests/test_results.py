"""`seqclf.results`: the schema every driver writes, its metadata, and the files and tables."""

import json
import pathlib

import pytest

from seqclf import results
from seqclf.configs import tiny
from seqclf.errors import UsageError


def results_file(**overrides):
  return {"schema_version": results.SCHEMA_VERSION, "kind": "article", "meta": {}, "runs": [], **overrides}


def test_json_round_trips_through_a_new_directory(tmp_path):
  path = tmp_path / "new" / "results.json"
  results.write_json_atomic(str(path), results_file(runs=[{"engine": "scan", "median_s": 0.5}]))
  assert results.load(str(path))["runs"] == [{"engine": "scan", "median_s": 0.5}]
  assert path.read_text().endswith("\n")


@pytest.mark.parametrize(
  "content,message",
  [
    (
      json.dumps(results_file(schema_version=results.SCHEMA_VERSION + 1)),
      "schema version 2, this seqclf reads 1",
    ),
    (json.dumps(results_file(schema_version=None)), "schema version None"),
    ("[1, 2]", "schema version None"),
    ('{"schema_version": 1,', "cannot read results file"),
  ],
)
def test_load_refuses_other_versions_and_broken_files(tmp_path, content, message):
  path = tmp_path / "results.json"
  path.write_text(content)
  with pytest.raises(UsageError, match=message):
    results.load(str(path))


def test_load_refuses_a_binary_file_in_one_line(tmp_path):
  """It raised UnicodeDecodeError."""
  path = tmp_path / "garbage.json"
  path.write_bytes(b"{\xff\xfe")
  with pytest.raises(
    UsageError, match=r"garbage.json is not a results file \(not UTF-8 text: byte 0xff at offset 1"
  ):
    results.load(str(path))


def test_load_of_a_missing_file_names_it(tmp_path):
  with pytest.raises(UsageError, match="cannot read results file .*missing.json"):
    results.load(str(tmp_path / "missing.json"))


def test_an_unwritable_place_is_a_usage_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UsageError, match="cannot write"):
    results.write_text_atomic(str(blocker / "results.md"), "x")


def test_meta_says_where_and_with_what_it_ran():
  meta = results.collect_meta(tiny.get_config(), flags={"preset": "none"})
  assert meta["device"]["platform"] == "cpu" and meta["device"]["count"] >= 1
  assert meta["device"]["process_count"] == 1
  assert meta["versions"]["jax"] and meta["versions"]["python"]
  assert set(meta["git"]) == {"commit", "dirty"}
  assert meta["config"]["maxlen"] == tiny.get_config().maxlen and meta["flags"] == {"preset": "none"}
  json.dumps(meta)  # everything in it is JSON


def test_markdown_table():
  assert results.markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == (
    "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | y |\n"
  )


def test_the_recorded_command_names_the_module_not_this_machines_path():
  # The driver's path, not its import: importing a driver defines its flags in this test process.
  article = pathlib.Path(results.__file__).parent / "benchmarks" / "article.py"
  assert results.command_line([str(article), "--seeds=0", "--workdir=/data/w"]) == [
    "python",
    "-m",
    "seqclf.benchmarks.article",
    "--seeds=0",
    "--workdir=/data/w",
  ]
  assert results.command_line(["/home/u/.venv/bin/seqclf-train", "--workdir=runs/a"]) == [
    "seqclf-train",
    "--workdir=runs/a",
  ]


def test_differences_name_each_changed_key():
  before = {"learning_rate": 0.001, "model": {"engine": "scan", "lstm_features": 100}, "seeds": "0"}
  now = {"learning_rate": 0.01, "model": {"engine": "scan"}, "seeds": "0", "mask": True}
  assert results.differences(before, now) == [
    "learning_rate: 0.001 -> 0.01",
    "mask: (absent) -> True",
    "model.lstm_features: 100 -> (absent)",
  ]

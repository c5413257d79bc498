"""Own datasets from CSV/TSV/JSONL files: parsing, labels, line-numbered errors, splits and encoding."""

import json

import numpy as np
import pytest

from seqclf.data import text_files
from seqclf.data.encoding import encode
from seqclf.errors import ConfigError, DataError


def _write(tmp_path, name: str, content: str | bytes):
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8")
  return path


def _jsonl(*rows) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def test_csv_with_names_quotes_and_blank_lines(tmp_path):
  path = _write(
    tmp_path,
    "reviews.csv",
    'id,text,label\n1,"Great, truly ""great"" film",pos\n\n2,"two\nlines",neg\n3,,neg\n',
  )
  texts, labels, names = text_files.load_text_file(path)
  assert texts == ['Great, truly "great" film', "two\nlines", ""]
  assert names == ["neg", "pos"] and labels.tolist() == [1, 0, 0] and labels.dtype == np.int32


def test_tsv_with_other_field_names_and_a_byte_order_mark(tmp_path):
  path = _write(tmp_path, "reviews.tsv", "\ufeffsentiment\treview\npositive\tFine\nnegative\tPoor\n")
  texts, labels, names = text_files.load_text_file(path, text_field="review", label_field="sentiment")
  assert texts == ["Fine", "Poor"] and names == ["negative", "positive"] and labels.tolist() == [1, 0]


def test_jsonl_with_three_named_classes(tmp_path):
  path = _write(
    tmp_path,
    "genres.jsonl",
    _jsonl(
      {"text": "lol", "label": "comedy"},
      {"text": "boo", "label": "horror"},
      {"text": "sob", "label": "drama"},
    )
    + "\n",
  )
  texts, labels, names = text_files.load_text_file(path)
  assert names == ["comedy", "drama", "horror"] and labels.tolist() == [0, 2, 1] and texts[1] == "boo"


def test_integer_labels_in_jsonl_and_csv(tmp_path):
  jsonl = _write(
    tmp_path,
    "ids.jsonl",
    _jsonl({"text": "a", "label": 2}, {"text": "b", "label": 0}, {"text": "c", "label": 1}),
  )
  _, labels, names = text_files.load_text_file(jsonl)
  assert names == ["0", "1", "2"] and labels.tolist() == [2, 0, 1]
  csv_path = _write(tmp_path, "ids.csv", "text,label\na,1\nb,0\n")
  _, labels, names = text_files.load_text_file(csv_path)
  assert names == ["0", "1"] and labels.tolist() == [1, 0]


def test_jsonl_string_digits_are_names(tmp_path):
  path = _write(tmp_path, "stars.jsonl", _jsonl({"text": "a", "label": "5"}, {"text": "b", "label": "10"}))
  _, labels, names = text_files.load_text_file(path)
  assert names == ["10", "5"] and labels.tolist() == [1, 0]


def test_given_label_names_fix_the_ids(tmp_path):
  path = _write(tmp_path, "test.csv", "text,label\na,pos\nb,0\n")
  _, labels, names = text_files.load_text_file(path, label_names=["neg", "pos"])
  assert names == ["neg", "pos"] and labels.tolist() == [1, 0]
  unknown = _write(tmp_path, "unknown.csv", "text,label\na,pos\nb,meh\n")
  with pytest.raises(DataError, match=r"unknown.csv line 3: unknown label 'meh' \(known: neg, pos\)"):
    text_files.load_text_file(unknown, label_names=["neg", "pos"])
  too_big = _write(tmp_path, "big.jsonl", _jsonl({"text": "a", "label": 1}, {"text": "b", "label": 2}))
  with pytest.raises(DataError, match=r"big.jsonl line 2: label 2 is not an id in 0..1"):
    text_files.load_text_file(too_big, label_names=["neg", "pos"])


@pytest.mark.parametrize(
  "name,content,message",
  [
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', "bad.jsonl line 2: not valid"),
    ("list.jsonl", '{"text": "a", "label": 1}\n\n["b", 0]\n', r"list.jsonl line 3: not a JSON object"),
    ("nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "nolabel.jsonl line 2: no 'label'"),
    ("notext.jsonl", '{"label": 1}\n', r"notext.jsonl line 1: no 'text' field"),
    ("nulltext.jsonl", '{"text": null, "label": 1}\n', "nulltext.jsonl line 1: 'text' is None, not a text"),
    ("floatlabel.jsonl", '{"text": "a", "label": 1.5}\n', r"floatlabel.jsonl line 1: unknown label 1.5"),
    ("columns.csv", 'text,label\na,1\n"b\nc",0,x\n', "columns.csv line 3: 3 fields but the header has 2"),
    ("header.csv", "review,label\na,1\n", r"header.csv line 1: the header \(review, label\) has no 'text'"),
    (
      "twice.csv",
      "text,label,label\na,1,x\n",
      r"twice.csv line 1: the header names the 'label' column 2 times \(columns 2, 3\): rename all but",
    ),
    ("quote.csv", 'text,label\na,1\n"b"x,0\n', r"quote.csv line 3: .*fix the quoting"),
    ("mixed.csv", "text,label\na,1\nb,pos\n", "mixed.csv line 3: label 'pos' mixes class ids and names"),
    ("negative.csv", "text,label\na,1\nb,-1\n", r"negative.csv line 3: label '-1' is not an id in 0..1"),
    ("one.csv", "text,label\na,pos\nb,pos\n", r"one.csv has one class \('pos'\)"),
    ("gap.csv", "text,label\na,0\nb,2\n", r"gap.csv: labels are class ids 0..2 but no example has id 1"),
    (
      "case.csv",
      "text,label\na,pos\nb,neg\nc,Pos\n",
      r"case.csv line 4: label 'Pos' differs from 'pos' \(line 2\) only in case",
    ),
    ("empty.csv", "text,label\n", r"empty.csv has no examples"),
    ("nolabel.csv", "text,label\na,pos\nb,\nc,neg\n", "nolabel.csv line 3: the 'label' field is empty"),
    ("spacelabel.tsv", "text\tlabel\na\tpos\nb\t  \n", "spacelabel.tsv line 3: the 'label' field is empty"),
    (
      "emptylabel.jsonl",
      '{"text": "a", "label": ""}\n',
      "emptylabel.jsonl line 1: the 'label' field is empty",
    ),
    (
      "nulllabel.jsonl",
      '{"text": "a", "label": null}\n',
      "nulllabel.jsonl line 1: the 'label' field is empty",
    ),
    ("reviews.txt", "a\n", r"cannot tell the format of .*reviews.txt: name it \.csv, \.tsv or \.jsonl"),
  ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, name, content, message):
  with pytest.raises(DataError, match=message):
    text_files.load_text_file(_write(tmp_path, name, content))


def test_non_utf8_bytes_are_refused_with_their_line(tmp_path):
  path = _write(tmp_path, "latin1.csv", "text,label\nfine,pos\ncafé,neg\n".encode("latin-1"))
  with pytest.raises(DataError, match=r"latin1.csv line 3 is not UTF-8 \(byte 0xe9\): save the file as"):
    text_files.load_text_file(path)


def test_a_missing_file_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match=r"cannot read .*missing.csv \(No such file or directory\)"):
    text_files.load_text_file(tmp_path / "missing.csv")


def test_split_validation_is_deterministic_and_keeps_order():
  texts = [f"t{i}" for i in range(10)]
  labels = np.arange(10, dtype=np.int32)
  x_train, y_train, x_val, y_val = text_files.split_validation(texts, labels, 0.3, seed=4)
  assert len(x_val) == 3 and len(x_train) == 7
  assert sorted(x_train + x_val) == sorted(texts)
  assert [f"t{i}" for i in y_train] == x_train and [f"t{i}" for i in y_val] == x_val
  assert list(y_val) == sorted(y_val)
  again = text_files.split_validation(texts, labels, 0.3, seed=4)
  assert again[2] == x_val
  assert text_files.split_validation(texts, labels, 0.3, seed=5)[2] != x_val
  arrays = text_files.split_validation(labels[:, None], labels, 0.3, seed=4)
  np.testing.assert_array_equal(arrays[2][:, 0], y_val)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.1", True])
def test_split_validation_rejects_fractions_outside_0_1(fraction):
  with pytest.raises(ConfigError, match=r"validation fraction must be a number in \(0, 1\)"):
    text_files.split_validation(["a", "b"], np.zeros(2, np.int32), fraction, seed=0)


def test_split_validation_needs_an_example_on_each_side():
  with pytest.raises(DataError, match="3 examples are too few"):
    text_files.split_validation(["a", "b", "c"], np.zeros(3, np.int32), 0.1, seed=0)


def test_load_and_encode_a_dataset_with_validation_and_test(tmp_path):
  train_rows = [
    {"text": f"{'good' if i % 3 else 'bad'} film {i}", "label": "pos" if i % 3 else "neg"} for i in range(20)
  ]
  train_path = _write(tmp_path, "train.jsonl", _jsonl(*train_rows))
  test_path = _write(tmp_path, "test.csv", "text,label\ngood,pos\nbad,neg\nmeh,1\n")
  dataset = text_files.load_text_dataset(train_path, test_path, val_fraction=0.25, seed=1)
  assert dataset.label_names == ["neg", "pos"]
  assert len(dataset.train.texts) == 15 and len(dataset.validation.texts) == 5
  assert dataset.test.texts == ["good", "bad", "meh"] and dataset.test.labels.tolist() == [1, 0, 1]

  data = text_files.encode_text_dataset(dataset, top_words=10, maxlen=6)
  assert data.x_train.shape == (15, 6) and data.x_test.shape == (5, 6)  # x_test: the validation split
  np.testing.assert_array_equal(data.y_test, dataset.validation.labels)
  np.testing.assert_array_equal(data.x_test, encode(dataset.validation.texts, data.vocab, 6))
  validation_words = {word for text in dataset.validation.texts for word in text.split()} - {
    word for text in dataset.train.texts for word in text.split()
  }
  assert not validation_words & set(data.vocab.words)  # fitted on the train split only


def test_without_validation_the_test_split_is_evaluated(tmp_path):
  train_path = _write(tmp_path, "train.csv", "text,label\ngood,pos\nbad,neg\n")
  test_path = _write(tmp_path, "test.csv", "text,label\nbad,neg\n")
  dataset = text_files.load_text_dataset(train_path, test_path, val_fraction=0)
  assert dataset.validation is None
  data = text_files.encode_text_dataset(dataset, top_words=8, maxlen=4)
  np.testing.assert_array_equal(data.y_test, [0])
  with pytest.raises(ConfigError, match="nothing to evaluate on"):
    text_files.load_text_dataset(train_path, val_fraction=0)


def test_a_text_longer_than_csvs_default_field_limit_is_read(tmp_path):
  """csv's 128 KiB field limit refused a correctly quoted 1 MB review, blaming the quoting."""
  import csv

  long_text = "word " * 200_000  # 1 MB
  path = _write(tmp_path, "long.csv", f'text,label\n"{long_text}",pos\nshort,neg\n')
  default_limit = csv.field_size_limit()
  texts, labels, names = text_files.load_text_file(path)
  assert texts[0] == long_text and names == ["neg", "pos"] and list(labels) == [1, 0]
  assert csv.field_size_limit() == default_limit  # the process-wide limit is left as it was


def test_spaces_around_a_label_make_no_class_of_their_own(tmp_path):
  """`food` and `food ` were two classes."""
  path = _write(tmp_path, "topics.csv", "text,label\npasta,food\nsalad,food \ngoal, sport\n")
  texts, labels, names = text_files.load_text_file(path)
  assert names == ["food", "sport"] and labels.tolist() == [0, 0, 1]
  jsonl = _write(tmp_path, "topics.jsonl", _jsonl({"text": "soup", "label": " sport "}))
  assert text_files.load_text_file(jsonl, label_names=names)[1].tolist() == [1]

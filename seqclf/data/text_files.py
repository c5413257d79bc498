"""Your own labelled texts: CSV/TSV or JSON Lines files, split and encoded like the IMDB reviews.

File formats (chosen by extension):

* ``.csv`` (comma) and ``.tsv`` (tab): a header row naming the columns, then one example per row; fields
  may be quoted (``"..."``, ``""`` for a quote) and may then hold the delimiter and line breaks.
* ``.jsonl``: one JSON object per line, e.g. ``{"text": "A fine film", "label": "pos"}``.

Blank lines are skipped. Files must be UTF-8 (a byte-order mark is allowed): a file in another encoding is
refused with the line of its first undecodable byte rather than silently garbled, since a wrong encoding
usually spoils every non-ASCII word.

Labels are class names (strings, spaces around them ignored) or class ids (integers; in CSV, fields of
digits), one kind per file.
Names get ids in sorted order (``neg``, ``pos`` -> 0, 1). Ids must not be negative; the classes are then
``"0"``..``"C-1"``, C - 1 being the largest id. Passing ``label_names`` fixes the classes instead (use the
train file's for the test file): then names must be among them and ids below their count.

A driver uses it like this (the vocabulary is fitted on the train split only)::

  texts = load_text_dataset("train.csv", "test.csv", val_fraction=0.1, seed=seed)
  data = encode_text_dataset(texts, top_words=..., maxlen=..., padding=..., truncating=...)
  model = models.create(variant, vocab_size=config.top_words, num_classes=len(texts.label_names), ...)
  train.fit(model, data, config, seed=seed)     # evaluates on the validation split every epoch
  x_test = encode(texts.test.texts, data.vocab, config.maxlen, ...)   # then once on the test split
"""

import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Iterator

import numpy as np

from seqclf.data.aclimdb import TextSplit
from seqclf.data.cache import EncodedDataset
from seqclf.data.encoding import Vocabulary, encode, tokenize
from seqclf.errors import ConfigError, DataError

_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSONL = ".jsonl"
_DIGITS = re.compile(r"[+-]?\d+")


@dataclasses.dataclass(frozen=True)
class TextFileDataset:
  """Labelled texts split for training.

  Attributes:
    train: The examples to fit on.
    validation: The examples evaluated after every epoch (and ranking checkpoints); None when the
      test split plays that part, as in the article.
    test: The held-out examples, or None when there is no test file.
    label_names: Class names in label id order.
  """

  train: TextSplit
  validation: TextSplit | None
  test: TextSplit | None
  label_names: list[str]


def load_text_file(
  path: str | os.PathLike[str],
  *,
  text_field: str = "text",
  label_field: str = "label",
  label_names: list[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
  """Reads labelled texts from a ``.csv``, ``.tsv`` or ``.jsonl`` file.

  Args:
    path: The file.
    text_field: The column (CSV/TSV) or key (JSONL) holding the text; an empty text is allowed.
    label_field: The column or key holding the label.
    label_names: The classes, in id order; by default they come from the file (see the module doc).

  Returns:
    ``(texts, labels, label_names)``: labels are int32 ids into ``label_names``.

  Raises:
    DataError: The file is missing, unreadable, not UTF-8, of an unknown type, empty, has fewer than two
      classes, or has a malformed row (the message names the file and line).
  """
  path = os.fspath(path)
  extension = os.path.splitext(path)[1].lower()
  if extension not in _DELIMITERS and extension != _JSONL:
    raise DataError(f"cannot tell the format of {path}: name it .csv, .tsv or .jsonl")
  content = _read_utf8(path)
  if extension == _JSONL:
    rows = _jsonl_rows(path, content)
  else:
    rows = _csv_rows(path, content, _DELIMITERS[extension], required=(text_field, label_field))
  texts, raw_labels = [], []
  for line, row in rows:
    for field in (text_field, label_field):
      if field not in row:
        raise DataError(
          f"{path} line {line}: no {field!r} field: add it, or pass the name of the field that holds it"
        )
    if not isinstance(row[text_field], str):
      raise DataError(f"{path} line {line}: {text_field!r} is {row[text_field]!r}, not a text: quote it")
    label = row[label_field]
    if label is None or (isinstance(label, str) and not label.strip()):
      raise DataError(
        f"{path} line {line}: the {label_field!r} field is empty: give every row a label, or remove the row"
      )
    texts.append(row[text_field])
    # "food" and "food " are one class: spaces around a name are an artefact of how the file was written.
    raw_labels.append((line, label.strip() if isinstance(label, str) else label))
  if not texts:
    raise DataError(f"{path} has no examples: add some, one per row")
  labels, label_names = _label_ids(path, raw_labels, label_names, digits_are_ids=extension != _JSONL)
  return texts, labels, label_names


def split_validation(x, y: np.ndarray, fraction: float, seed: int):
  """Holds out a random ``fraction`` of the examples for validation, the same ones for the same seed.

  Args:
    x: Texts (a list) or an array of examples, first axis the example.
    y: Labels, one per example.
    fraction: Share of the examples to hold out, in (0, 1).
    seed: Chooses the held-out examples.

  Returns:
    ``(x_train, y_train, x_val, y_val)``; each part keeps the examples' original order.

  Raises:
    ConfigError: ``fraction`` is not in (0, 1).
    DataError: Too few examples to leave at least one on each side.
  """
  if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
    raise ConfigError(f"the validation fraction must be a number in (0, 1), e.g. 0.1, got {fraction!r}")
  n = len(y)
  n_val = round(n * fraction)
  if not 0 < n_val < n:
    raise DataError(
      f"{n} examples are too few to hold out a validation fraction of {fraction}: add "
      "examples or change the fraction"
    )
  is_val = np.zeros(n, bool)
  is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
  take = lambda mask: [x[i] for i in np.flatnonzero(mask)] if isinstance(x, list) else x[mask]
  return take(~is_val), y[~is_val], take(is_val), y[is_val]


def load_text_dataset(
  train_path: str | os.PathLike[str],
  test_path: str | os.PathLike[str] | None = None,
  *,
  val_fraction: float,
  seed: int = 0,
  text_field: str = "text",
  label_field: str = "label",
  label_names: list[str] | None = None,
) -> TextFileDataset:
  """Reads a train file and optionally a test file, holding out part of the train file for validation.

  Args:
    train_path: The training examples; they also define the classes unless ``label_names`` is given.
    test_path: Held-out test examples (read with the train file's classes), or None.
    val_fraction: Share of the train file to hold out for validation, in (0, 1); 0 for no validation
      split, in which case the test split is evaluated every epoch (as the article does).
    seed: Chooses the validation examples.
    text_field: As for :func:`load_text_file`.
    label_field: As for :func:`load_text_file`.
    label_names: As for :func:`load_text_file`.

  Raises:
    ConfigError: ``val_fraction`` is out of range, or 0 without a test file (nothing to evaluate on).
    DataError: As for :func:`load_text_file` and :func:`split_validation`.
  """
  if val_fraction == 0 and test_path is None:
    raise ConfigError("nothing to evaluate on: pass a test file, or a validation fraction above 0")
  fields = {"text_field": text_field, "label_field": label_field}
  texts, labels, label_names = load_text_file(train_path, label_names=label_names, **fields)
  validation = None
  if val_fraction != 0:
    texts, labels, val_texts, val_labels = split_validation(texts, labels, val_fraction, seed)
    validation = TextSplit(val_texts, val_labels)
  test = None
  if test_path is not None:
    test_texts, test_labels, _ = load_text_file(test_path, label_names=label_names, **fields)
    test = TextSplit(test_texts, test_labels)
  return TextFileDataset(TextSplit(texts, labels), validation, test, label_names)


def encode_text_dataset(
  dataset: TextFileDataset, *, top_words: int, maxlen: int, padding: str = "pre", truncating: str = "pre"
) -> EncodedDataset:
  """Fits the vocabulary on the train split and encodes it with the split to evaluate every epoch.

  That split, the ``x_test``/``y_test`` of the result (the arrays ``train.fit`` evaluates), is the
  validation split, or the test split when there is none. Encode a held-out test split yourself with
  ``encode(dataset.test.texts, result.vocab, maxlen, ...)``.

  Raises:
    ConfigError: An encoding option is out of range.
  """
  train_tokens = [tokenize(text) for text in dataset.train.texts]
  vocab = Vocabulary.fit(train_tokens, top_words)
  evaluated = dataset.validation if dataset.validation is not None else dataset.test
  options = {"padding": padding, "truncating": truncating}
  return EncodedDataset(
    x_train=encode(train_tokens, vocab, maxlen, **options),
    y_train=dataset.train.labels,
    x_test=encode(evaluated.texts, vocab, maxlen, **options),
    y_test=evaluated.labels,
    vocab=vocab,
  )


def _read_utf8(path: str) -> str:
  try:
    with open(path, "rb") as file:
      data = file.read()
  except OSError as error:
    raise DataError(f"cannot read {path} ({error.strerror}): check the path") from error
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    line = data[: error.start].count(b"\n") + 1
    raise DataError(
      f"{path} line {line} is not UTF-8 (byte 0x{data[error.start]:02x}): save the file as UTF-8"
    ) from error


def _csv_rows(
  path: str, content: str, delimiter: str, required: tuple[str, ...]
) -> Iterator[tuple[int, dict]]:
  """Yields ``(line number, {column: field})`` per row; a row's line is the one it starts on."""
  reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True)
  header, line = None, 1
  # csv refuses fields over 128 KiB by default; a text of any length is one review (the encoder keeps
  # maxlen tokens of it) and no field outgrows the file, which is already in memory.
  limit = csv.field_size_limit(max(csv.field_size_limit(), len(content) + 1))
  try:
    for fields in reader:
      if fields and header is None:
        header = fields
        for column in required:
          if column not in header:
            raise DataError(
              f"{path} line {line}: the header ({', '.join(header)}) has no {column!r} column: "
              "start the file with a header row naming the columns, or pass the name of the "
              "column that holds it"
            )
          positions = [i + 1 for i, name in enumerate(header) if name == column]
          if len(positions) > 1:  # one of them would be read, silently
            raise DataError(
              f"{path} line {line}: the header names the {column!r} column {len(positions)} times (columns "
              f"{', '.join(map(str, positions))}): rename all but the one to read"
            )
      elif fields:  # blank lines come as empty rows
        if len(fields) != len(header):
          raise DataError(
            f"{path} line {line}: {len(fields)} fields but the header has {len(header)}: "
            f"quote fields that contain {delimiter!r}"
          )
        yield line, dict(zip(header, fields))
      line = reader.line_num + 1
  except csv.Error as error:
    raise DataError(f"{path} line {line}: {error}: fix the quoting") from error
  finally:
    csv.field_size_limit(limit)


def _jsonl_rows(path: str, content: str) -> Iterator[tuple[int, dict]]:
  for line, text in enumerate(content.split("\n"), 1):
    if not text.strip():
      continue
    try:
      row = json.loads(text)
    except json.JSONDecodeError as error:
      raise DataError(
        f"{path} line {line}: not valid JSON ({error.msg} at column {error.colno}): write "
        "one JSON object per line"
      ) from error
    if not isinstance(row, dict):
      raise DataError(
        f"{path} line {line}: not a JSON object: write one object per line, e.g. "
        '{"text": "...", "label": "..."}'
      )
    yield line, row


def _label_ids(
  path: str, raw_labels: list[tuple[int, object]], label_names: list[str] | None, digits_are_ids: bool
) -> tuple[np.ndarray, list[str]]:
  """Maps ``raw_labels`` ((line, label) pairs) to ids; see the module doc for the rules.

  ``digits_are_ids``: whether a text label of digits is an id (CSV, whose fields are all text) rather
  than a name (JSON, whose ids are numbers).
  """
  id_of_name = {name: index for index, name in enumerate(label_names or [])}
  values = []  # an int id, or a str name when the classes come from the file
  for line, label in raw_labels:
    if isinstance(label, str) and label in id_of_name:
      values.append(id_of_name[label])  # a listed name wins over reading "1" as an id
    elif isinstance(label, int) and not isinstance(label, bool):
      values.append(label)
    elif isinstance(label, str) and digits_are_ids and _DIGITS.fullmatch(label.strip()):
      values.append(int(label))
    elif isinstance(label, str) and label_names is None:
      values.append(label)
    else:
      known = f" (known: {', '.join(label_names)})" if label_names is not None else ""
      raise DataError(
        f"{path} line {line}: unknown label {label!r}{known}: labels are class names or ids 0..C-1"
      )
  if label_names is None:
    label_names = _names_from(path, raw_labels, values)
    id_of_name = {name: index for index, name in enumerate(label_names)}
  ids = [value if isinstance(value, int) else id_of_name[value] for value in values]
  for (line, label), label_id in zip(raw_labels, ids):
    if not 0 <= label_id < len(label_names):
      raise DataError(
        f"{path} line {line}: label {label!r} is not an id in 0..{len(label_names) - 1}: "
        "number the classes from 0"
      )
  if len(label_names) < 2:
    raise DataError(f"{path} has one class ({label_names[0]!r}): a classifier needs examples of two or more")
  return np.asarray(ids, np.int32), list(label_names)


def _names_from(path: str, raw_labels: list[tuple[int, object]], values: list[int | str]) -> list[str]:
  """The classes of a file read without ``label_names``: sorted names, or "0".."C-1" for ids."""
  is_id = [isinstance(value, int) for value in values]
  if not any(is_id):
    # Classes that differ only in case are almost always one class written two ways.
    first_of = {}
    for (line, label), name in zip(raw_labels, values):
      other = first_of.setdefault(name.casefold(), (line, name))
      if other[1] != name:
        raise DataError(
          f"{path} line {line}: label {label!r} differs from {other[1]!r} (line {other[0]}) only in case: "
          "write each class one way"
        )
    return sorted(set(values))
  if all(is_id):
    # Ids number the classes 0..C-1: a gap would be a class the model is trained on with no example.
    missing = sorted(set(range(max(values) + 1)) - set(values))
    if missing and min(values) >= 0:  # a negative id gets its own message below
      raise DataError(
        f"{path}: labels are class ids 0..{max(values)} but no example has id "
        f"{', '.join(map(str, missing[:5]))}: number the classes 0..C-1 without gaps, or write them as names"
      )
    return [str(label_id) for label_id in range(max(values) + 1)]
  line, label = next(pair for pair, kind in zip(raw_labels, is_id) if kind != is_id[0])
  raise DataError(f"{path} line {line}: label {label!r} mixes class ids and names: use one kind of label")

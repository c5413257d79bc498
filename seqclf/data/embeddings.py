"""Pretrained word vectors (GloVe, word2vec text format) as an initial embedding matrix for a vocabulary.

A vector file has one word per line followed by its numbers, separated by spaces: ``the 0.418 0.24968 ...``.
word2vec's text format starts with a header line ``<word count> <dimension>``, which is recognised and
skipped. Files may be gzipped (``.gz``). Some large GloVe files hold a few "words" with spaces in them
(``. . .``); a line's vector is therefore its last ``dimension`` fields and the word everything before.

Only the vectors of vocabulary words are parsed, so a multi-gigabyte file costs little more than reading
it; every line's field count is checked. Undecodable bytes are replaced: they cannot be part of a
vocabulary word, as the tokenizer keeps only letters, digits and apostrophes.
"""

import gzip
import os

import numpy as np

from seqclf.data.encoding import INDEX_FROM, PAD_ID, Vocabulary
from seqclf.errors import DataError

# Keras' Embedding initialiser, used for rows without a pretrained vector.
_INIT_SCALE = 0.05
_FIRST_WORD_ID = INDEX_FROM + 1


def load_pretrained(
  path: str | os.PathLike[str], vocab: Vocabulary, embed_dim: int | None = None, *, seed: int = 0
) -> tuple[np.ndarray, float]:
  """Builds an embedding matrix for ``vocab`` from a text file of word vectors.

  Row ``i`` is the vector of the word with id ``i``. A vocabulary word takes the file's vector of the
  same word, else of the first word equal to it once lowercased (the vocabulary is lowercase; cased
  files such as GloVe 840B may hold only "Paris"). Rows without a vector (reserved ids, words not in the
  file) are drawn from uniform(-0.05, 0.05) with ``seed``, as Keras initialises an embedding; the padding
  row is zero.

  Args:
    path: The vector file (``.gz`` for gzipped).
    vocab: The vocabulary; the matrix has ``vocab.top_words`` rows.
    embed_dim: The expected vector size (the model's ``embed_dim``); None to take the file's.
    seed: Seeds the rows without a vector.

  Returns:
    ``(matrix, coverage)``: a float32 array [top_words, dim] and the fraction of vocabulary words that
    got a pretrained vector.

  Raises:
    DataError: The file is missing or unreadable, has no vectors, has vectors of another size than
      ``embed_dim``, or a line with too few numbers or a number that does not parse (named by line).
  """
  path = os.fspath(path)
  word_ids = {word: word_id for word_id, word in enumerate(vocab.words, start=_FIRST_WORD_ID)}
  exact, lowercased = {}, {}  # word id -> (line number, its vector's fields), first occurrence only
  dim, vector_count = None, 0
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8", errors="replace") as file:
      for line_number, line in enumerate(file, 1):
        # Split on " " only: a few words hold other whitespace (no-break spaces) that split() would cut.
        fields = line.rstrip("\r\n").rstrip(" ").split(" ")
        if line_number == 1 and _is_word2vec_header(fields):
          dim = _checked_dim(path, line_number, int(fields[1]), embed_dim)
          continue
        if fields == [""]:
          continue
        if dim is None:
          dim = _checked_dim(path, line_number, len(fields) - 1, embed_dim)
        if len(fields) < dim + 1:
          raise DataError(
            f"{path} line {line_number}: expected a word and {dim} numbers, found "
            f"{len(fields) - 1} numbers: pass a text GloVe/word2vec file (binary .bin files "
            "are not supported)"
          )
        vector_count += 1
        word, numbers = " ".join(fields[:-dim]), fields[-dim:]
        if word in word_ids:
          exact.setdefault(word_ids[word], (line_number, numbers))
        elif word.lower() in word_ids:
          lowercased.setdefault(word_ids[word.lower()], (line_number, numbers))
  except (OSError, EOFError) as error:  # EOFError: a truncated .gz
    reason = getattr(error, "strerror", None) or error
    raise DataError(f"cannot read {path} ({reason}): check the path") from error
  if not vector_count:
    raise DataError(f"{path} holds no word vectors: pass a GloVe or word2vec text file")

  matrix = np.random.default_rng(seed).uniform(-_INIT_SCALE, _INIT_SCALE, (vocab.top_words, dim))
  matrix = matrix.astype(np.float32)
  matrix[PAD_ID] = 0.0
  for word_id, (line_number, numbers) in {**lowercased, **exact}.items():  # an exact match wins
    try:
      matrix[word_id] = np.asarray(numbers, dtype=np.float32)
    except ValueError as error:
      raise DataError(f"{path} line {line_number}: {error}: vectors must be numbers") from error
    if not np.all(np.isfinite(matrix[word_id])):  # a NaN would make every loss NaN from the first step
      raise DataError(f"{path} line {line_number}: a vector holds nan or inf: vectors must be finite numbers")
  coverage = len(exact.keys() | lowercased.keys()) / len(vocab.words) if vocab.words else 0.0
  return matrix, coverage


def _is_word2vec_header(fields: list[str]) -> bool:
  return len(fields) == 2 and all(field.isdigit() for field in fields)


def _checked_dim(path: str, line_number: int, dim: int, embed_dim: int | None) -> int:
  if dim < 1:
    raise DataError(f"{path} line {line_number}: a word without numbers: pass a GloVe or word2vec text file")
  if embed_dim is not None and dim != embed_dim:
    raise DataError(
      f"{path} line {line_number}: the vectors have {dim} numbers but embed_dim is "
      f"{embed_dim}: set the model's embed_dim to {dim}, or use a {embed_dim}-dimensional file"
    )
  return dim

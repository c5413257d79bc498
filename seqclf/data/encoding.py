"""Turning review texts into fixed-length arrays of word ids, compatible with Keras ``imdb.load_data``.

Ids follow the Keras IMDB convention: 0 pads, 1 starts a review, 2 stands for a word outside the
vocabulary, 3 is never used, and the word of frequency rank ``r`` (1 = most frequent) gets id ``r + 3``.
Only ids below ``top_words`` are kept, so ids always lie in ``[0, top_words)``: ``top_words`` is the size of
the embedding table. Sequences are padded and truncated like ``keras.preprocessing.sequence.pad_sequences``.
"""

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from seqclf.atomic import write_atomically
from seqclf.errors import ConfigError, DataError

PAD_ID = 0
START_ID = 1
OOV_ID = 2
INDEX_FROM = 3

# The most frequent word's id: rank 1 + INDEX_FROM, as in Keras.
_FIRST_WORD_ID = INDEX_FROM + 1
_SIDES = ("pre", "post")
_RESERVED_TOKENS = {START_ID: "<start>", OOV_ID: "<oov>"}
_VOCABULARY_FORMAT = "seqclf.vocabulary"
_VOCABULARY_FORMAT_VERSION = 1

# IMDB reviews mark line breaks with HTML tags; without this they would all become the word "br".
_LINE_BREAK = re.compile(r"<br\s*/?>")
# A word: letters and digits (any script, but not "_"), with inner apostrophes kept ("don't", "rock'n'roll").
# Apostrophes at either end (quotes, "dogs'") are not part of the word, so no token is ever empty.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
  """Splits a review into lowercase words.

  Line-break tags (``<br />``, ``<br/>``, ``<br>``) separate words; a word is a maximal run of unicode
  letters and digits, underscores excluded, which may contain single apostrophes between letters or digits
  (``don't``) but never starts or ends with one. All other characters, punctuation included, separate words.

  Args:
    text: One review.

  Returns:
    Its words, in order.
  """
  return _WORD.findall(_LINE_BREAK.sub(" ", text.lower()))


def validate_options(*, top_words: int, maxlen: int, padding: str = "pre", truncating: str = "pre") -> None:
  """Checks encoding options, so that bad ones fail before any data is read.

  Args:
    top_words: Number of ids, reserved ones included; must exceed ``INDEX_FROM``.
    maxlen: Length of every encoded review; must be positive.
    padding: Where to pad short reviews: "pre" or "post".
    truncating: Where to cut long reviews: "pre" or "post".

  Raises:
    ConfigError: An option is out of range or unknown.
  """
  _check_top_words(top_words)
  if not _is_integer(maxlen) or maxlen <= 0:
    raise ConfigError(f"maxlen must be a positive integer (tokens per review), got {maxlen!r}")
  for option, side in (("padding", padding), ("truncating", truncating)):
    if side not in _SIDES:
      raise ConfigError(f"{option} must be 'pre' (at the front) or 'post' (at the end), got {side!r}")


class Vocabulary:
  """The words kept for encoding and their ids.

  Attributes:
    top_words: Number of ids, reserved ones included: ids lie in ``[0, top_words)``.
    words: The kept words in id order: ``words[0]`` has id 4 (``INDEX_FROM + 1``), and so on.
  """

  def __init__(self, words: Sequence[str], top_words: int):
    """Creates a vocabulary from its words, most frequent first.

    Args:
      words: Distinct words, the one to get id 4 first; at most ``top_words - 4`` of them.
      top_words: Number of ids, reserved ones included.

    Raises:
      ConfigError: ``top_words`` is not an integer above ``INDEX_FROM``.
      DataError: The words repeat, or there are more than ``top_words`` allows.
    """
    _check_top_words(top_words)
    self.top_words = int(top_words)
    self.words = list(words)
    self._id_by_word = {word: word_id for word_id, word in enumerate(self.words, start=_FIRST_WORD_ID)}
    if len(self._id_by_word) != len(self.words):
      raise DataError("vocabulary words repeat: each word must appear once; rebuild it with Vocabulary.fit")
    if _FIRST_WORD_ID + len(self.words) > self.top_words:
      raise DataError(
        f"vocabulary has {len(self.words)} words but top_words={self.top_words} leaves room for"
        f" {self.top_words - _FIRST_WORD_ID}: raise top_words or rebuild it with Vocabulary.fit"
      )

  @classmethod
  def fit(cls, token_lists_or_texts: Iterable[str | Sequence[str]], top_words: int) -> "Vocabulary":
    """Builds the vocabulary of a corpus (the train split: fitting on test data would leak it).

    Words are ranked by descending count; words with equal counts keep the order in which they first
    appear in the corpus, so the result is deterministic. The ``top_words - 4`` best-ranked words are kept.

    Args:
      token_lists_or_texts: The corpus, each item either a text (tokenized with :func:`tokenize`) or an
        already tokenized list of words.
      top_words: Number of ids, reserved ones included.

    Raises:
      ConfigError: ``top_words`` is not an integer above ``INDEX_FROM``.
    """
    _check_top_words(top_words)
    # Counter keeps first-insertion order, and sorted() is stable even with reverse=True: ties stay in
    # order of first appearance.
    counts = collections.Counter()
    for tokens in _token_lists(token_lists_or_texts):
      counts.update(tokens)
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)
    return cls(ranked[: top_words - _FIRST_WORD_ID], top_words)

  def __len__(self) -> int:
    return self.top_words

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, Vocabulary):
      return NotImplemented
    return self.top_words == other.top_words and self.words == other.words

  __hash__ = None  # Mutable attributes: equal vocabularies must not be used as dict keys.

  def __repr__(self) -> str:
    return f"Vocabulary(top_words={self.top_words}, {len(self.words)} words)"

  def id_of(self, word: str) -> int:
    """Returns the id of ``word``, or ``OOV_ID`` when it is not kept."""
    return self._id_by_word.get(word, OOV_ID)

  def ids(self, tokens: Iterable[str]) -> list[int]:
    """Returns the id of each token (``OOV_ID`` for those not kept), without a start id."""
    lookup = self._id_by_word.get
    return [lookup(token, OOV_ID) for token in tokens]

  def decode(self, ids: Iterable[int]) -> list[str]:
    """Returns the tokens that ``ids`` stand for, to read encoded reviews.

    Padding is dropped; start and out-of-vocabulary ids become ``<start>`` and ``<oov>``.

    Raises:
      DataError: An id is not one this vocabulary produces.
    """
    tokens = []
    for token_id in ids:
      token_id = int(token_id)
      if token_id == PAD_ID:
        continue
      if token_id in _RESERVED_TOKENS:
        tokens.append(_RESERVED_TOKENS[token_id])
      elif _FIRST_WORD_ID <= token_id < _FIRST_WORD_ID + len(self.words):
        tokens.append(self.words[token_id - _FIRST_WORD_ID])
      else:
        raise DataError(
          f"id {token_id} is not produced by this vocabulary (ids 0-2 are reserved, words have ids"
          f" {_FIRST_WORD_ID}-{_FIRST_WORD_ID + len(self.words) - 1}): decode with the vocabulary that"
          " encoded the data"
        )
    return tokens

  def to_json(self) -> str:
    """Returns the vocabulary as a JSON document, readable by :meth:`from_json`."""
    return json.dumps(
      {
        "format": _VOCABULARY_FORMAT,
        "version": _VOCABULARY_FORMAT_VERSION,
        "top_words": self.top_words,
        "words": self.words,
      },
      ensure_ascii=False,
    )

  @classmethod
  def from_json(cls, document: str) -> "Vocabulary":
    """Reads a vocabulary written by :meth:`to_json`.

    Raises:
      DataError: The document is not such a vocabulary.
    """
    try:
      fields = json.loads(document)
    except ValueError as error:
      raise DataError(f"vocabulary is not valid JSON ({error}): rebuild it with Vocabulary.fit") from error
    if (
      not isinstance(fields, dict)
      or fields.get("format") != _VOCABULARY_FORMAT
      or fields.get("version") != _VOCABULARY_FORMAT_VERSION
      or not _is_integer(fields.get("top_words"))
      or not isinstance(fields.get("words"), list)
      or not all(isinstance(word, str) for word in fields["words"])
    ):
      raise DataError(
        f"JSON document is not a {_VOCABULARY_FORMAT} version {_VOCABULARY_FORMAT_VERSION} vocabulary:"
        " rebuild it with Vocabulary.fit"
      )
    try:
      return cls(fields["words"], fields["top_words"])
    except ConfigError as error:
      raise DataError(f"vocabulary is invalid ({error}): rebuild it with Vocabulary.fit") from error

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the vocabulary as JSON; atomically, so ``path`` never holds a partial file."""
    document = self.to_json().encode("utf-8")
    write_atomically(path, lambda file: file.write(document))

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> "Vocabulary":
    """Reads a vocabulary written by :meth:`save`.

    Raises:
      DataError: The file is missing, unreadable, or not a vocabulary.
    """
    try:
      with open(path, encoding="utf-8") as file:
        document = file.read()
    except (OSError, UnicodeDecodeError) as error:
      raise DataError(f"cannot read vocabulary {os.fspath(path)} ({error}): check the path") from error
    try:
      return cls.from_json(document)
    except DataError as error:
      raise DataError(f"{os.fspath(path)}: {error}") from error


def encode(
  texts: Sequence[str | Sequence[str]],
  vocab: Vocabulary,
  maxlen: int,
  *,
  padding: str = "pre",
  truncating: str = "pre",
  add_start: bool = True,
) -> np.ndarray:
  """Encodes reviews as a padded array of word ids.

  Each review becomes ``[START_ID] + ids`` (just ``ids`` without ``add_start``), then, like Keras
  ``pad_sequences``, is truncated to its last (``truncating="pre"``) or first (``"post"``) ``maxlen`` ids
  and padded with ``PAD_ID`` at the front (``padding="pre"``) or the end (``"post"``). As in the Keras
  tutorial, "pre" truncation drops the start id of reviews longer than ``maxlen - 1`` words.

  Args:
    texts: The reviews, each a text or an already tokenized list of words (to tokenize only once when
      the same tokens also fit the vocabulary).
    vocab: The vocabulary giving word ids.
    maxlen: Length of every encoded review.
    padding: Where to pad short reviews: "pre" or "post".
    truncating: Where to cut long reviews: "pre" or "post".
    add_start: Whether to start each review with ``START_ID``.

  Returns:
    An int32 array of shape [len(texts), maxlen].

  Raises:
    ConfigError: An option is out of range or unknown.
  """
  validate_options(top_words=vocab.top_words, maxlen=maxlen, padding=padding, truncating=truncating)
  encoded = np.full((len(texts), maxlen), PAD_ID, dtype=np.int32)
  prefix = [START_ID] if add_start else []
  for row, tokens in enumerate(_token_lists(texts)):
    token_ids = prefix + vocab.ids(tokens)
    if len(token_ids) > maxlen:
      token_ids = token_ids[-maxlen:] if truncating == "pre" else token_ids[:maxlen]
    if padding == "pre":
      encoded[row, maxlen - len(token_ids) :] = token_ids
    else:
      encoded[row, : len(token_ids)] = token_ids
  return encoded


def lengths(x: np.ndarray, padding: str) -> np.ndarray:
  """Returns the number of tokens of each encoded review, padding excluded (for masking).

  Args:
    x: Encoded reviews, shape [N, maxlen], as returned by :func:`encode`.
    padding: The side ``x`` was padded on: "pre" or "post".

  Returns:
    An int32 array of shape [N]. A row counts from its first non-pad id to its end ("pre") or from its
    start to its last non-pad id ("post").

  Raises:
    ConfigError: ``padding`` is unknown or ``x`` is not 2-D.
  """
  if padding not in _SIDES:
    raise ConfigError(f"padding must be 'pre' (at the front) or 'post' (at the end), got {padding!r}")
  if np.ndim(x) != 2:
    raise ConfigError(f"lengths expects encoded reviews of shape [N, maxlen], got shape {np.shape(x)}")
  is_token = np.asarray(x) != PAD_ID
  maxlen = is_token.shape[1]
  if padding == "pre":
    token_counts = maxlen - np.argmax(is_token, axis=1)
  else:
    token_counts = maxlen - np.argmax(is_token[:, ::-1], axis=1)
  # argmax finds no token in an all-padding row and returns 0, which would count the full row.
  return np.where(is_token.any(axis=1), token_counts, 0).astype(np.int32)


def _check_top_words(top_words: int) -> None:
  if not _is_integer(top_words) or top_words <= INDEX_FROM:
    raise ConfigError(
      f"top_words must be an integer above {INDEX_FROM} (ids 0-{INDEX_FROM} are reserved), got {top_words!r}"
    )


def _is_integer(value: object) -> bool:
  # bool is an int subclass, but top_words=True is a mistake, not the number 1.
  return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _token_lists(token_lists_or_texts: Iterable[str | Sequence[str]]) -> Iterable[Sequence[str]]:
  for item in token_lists_or_texts:
    yield tokenize(item) if isinstance(item, str) else item

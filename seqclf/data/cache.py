"""The encoded IMDB dataset, built once per source and options and then read back from a disk cache.

Reading the 50,000 reviews and encoding them takes several seconds; the cached arrays load in a fraction of
a second. A cache entry is one uncompressed ``.npz`` file (uncompressed because it loads fastest) holding the
four arrays and the vocabulary as JSON. Its name is a hash of everything the arrays depend on: the source's
identity (see :func:`seqclf.data.imdb.source_fingerprint`), the encoding options and
:data:`ENCODING_VERSION`; so changing any of them builds a new entry instead of reusing a stale one.
"""

import dataclasses
import hashlib
import json
import logging
import os
import zipfile

import numpy as np

from seqclf import dirs
from seqclf.atomic import write_atomically
from seqclf.data.encoding import Vocabulary, encode, tokenize, validate_options
from seqclf.data.imdb import load_imdb, local_source, source_fingerprint
from seqclf.errors import DataError

# Bump whenever tokenization, vocabulary building or encoding changes the arrays for the same options, so
# that existing cache entries stop matching.
ENCODING_VERSION = 1

# One variable for every seqclf cache (encoded data, downloads, the cpu_kernel build).
DOWNLOADS_DIR = "downloads"

_ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")
_VOCABULARY_ENTRY = "vocabulary_json"

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncodedDataset:
  """The IMDB splits as model inputs.

  Attributes:
    x_train: int32 word ids, shape [25000, maxlen] for the full dataset.
    y_train: int32 labels (0 = negative, 1 = positive), shape [25000].
    x_test: int32 word ids, shape [25000, maxlen].
    y_test: int32 labels, shape [25000].
    vocab: The vocabulary, fitted on the train split, that gave the ids.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  vocab: Vocabulary


def load_encoded(
  source: str | os.PathLike[str],
  *,
  top_words: int = 5000,
  maxlen: int = 500,
  padding: str = "pre",
  truncating: str = "pre",
  cache_dir: str | None = None,
  tfds_data_dir: str | None = None,
  sha256: str | None = None,
) -> EncodedDataset:
  """Loads the IMDB reviews encoded as word ids, from the cache when possible.

  A URL source is first downloaded into ``<cache_dir>/downloads/`` (once; see
  :func:`~seqclf.data.imdb.local_source`), and so is the official archive when ``"tfds"`` is not prepared.
  On a cache miss, reads the reviews with :func:`~seqclf.data.imdb.load_imdb`, fits the vocabulary on the
  train split only, encodes both splits with :func:`~seqclf.data.encoding.encode` (with start ids) and
  stores the result. A corrupt cache entry is logged and rebuilt.

  Args:
    source: ``"tfds"``, an aclImdb archive or directory, or an archive's http(s) URL.
    top_words: Number of ids, reserved ones included: the vocabulary keeps ``top_words - 4`` words.
    maxlen: Length of every encoded review.
    padding: Where to pad short reviews: "pre" or "post".
    truncating: Where to cut long reviews: "pre" or "post".
    cache_dir: Where cache entries live. Defaults to `seqclf.dirs.cache_dir`.
    tfds_data_dir: Where the tfds data was prepared, for ``source="tfds"`` only.
    sha256: The expected SHA-256 of the archive at a URL source.

  Returns:
    The encoded splits and their vocabulary.

  Raises:
    ConfigError: An option is out of range or unknown (checked before any data is read).
    DataError: The source cannot be downloaded or read, or the cache directory cannot be written.
  """
  validate_options(top_words=top_words, maxlen=maxlen, padding=padding, truncating=truncating)
  cache_dir = os.path.abspath(cache_dir or dirs.cache_dir())
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError as error:
    raise _unwritable_cache_error(cache_dir, error) from error
  source = local_source(
    source, download_dir=os.path.join(cache_dir, DOWNLOADS_DIR), sha256=sha256, tfds_data_dir=tfds_data_dir
  )
  options = {"top_words": int(top_words), "maxlen": int(maxlen), "padding": padding, "truncating": truncating}
  cache_key = {
    "source": source_fingerprint(source, tfds_data_dir=tfds_data_dir),
    "options": options,
    "encoding_version": ENCODING_VERSION,
  }
  key_digest = hashlib.sha256(json.dumps(cache_key, sort_keys=True).encode("utf-8")).hexdigest()
  cache_path = os.path.join(cache_dir, f"imdb-{key_digest[:32]}.npz")

  cached = _read_cache_entry(cache_path, top_words=top_words, maxlen=maxlen)
  if cached is not None:
    return cached
  dataset = load_imdb(source, tfds_data_dir=tfds_data_dir)
  # Tokenized once, for both fitting the vocabulary and encoding.
  train_tokens = [tokenize(text) for text in dataset.train.texts]
  vocab = Vocabulary.fit(train_tokens, top_words)
  encoded = EncodedDataset(
    x_train=encode(train_tokens, vocab, maxlen, padding=padding, truncating=truncating),
    y_train=dataset.train.labels,
    x_test=encode(dataset.test.texts, vocab, maxlen, padding=padding, truncating=truncating),
    y_test=dataset.test.labels,
    vocab=vocab,
  )
  _write_cache_entry(cache_path, encoded)
  return encoded


def _read_cache_entry(path: str, *, top_words: int, maxlen: int) -> EncodedDataset | None:
  """Returns the cached dataset at ``path``, or None if there is none or it is unusable."""
  try:
    with np.load(path, allow_pickle=False) as entry:
      arrays = {name: entry[name] for name in _ARRAY_NAMES}
      vocab = Vocabulary.from_json(str(entry[_VOCABULARY_ENTRY]))
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError) as error:
    _logger.warning("Ignoring unreadable cache entry %s (%s); rebuilding it.", path, error)
    return None
  cached = EncodedDataset(**arrays, vocab=vocab)
  if not _is_consistent(cached, top_words=top_words, maxlen=maxlen):
    _logger.warning("Ignoring inconsistent cache entry %s; rebuilding it.", path)
    return None
  return cached


def _is_consistent(dataset: EncodedDataset, *, top_words: int, maxlen: int) -> bool:
  """Checks shapes and dtypes, so that a damaged entry that still parses is not returned."""
  return dataset.vocab.top_words == top_words and all(
    x.dtype == np.int32
    and y.dtype == np.int32
    and x.ndim == 2
    and x.shape[1] == maxlen
    and y.shape == x.shape[:1]
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test))
  )


def _write_cache_entry(path: str, dataset: EncodedDataset) -> None:
  arrays = {name: getattr(dataset, name) for name in _ARRAY_NAMES}
  arrays[_VOCABULARY_ENTRY] = np.array(dataset.vocab.to_json())
  try:
    write_atomically(path, lambda file: np.savez(file, **arrays))
  except OSError as error:
    raise _unwritable_cache_error(os.path.dirname(path), error) from error


def _unwritable_cache_error(cache_dir: str, error: OSError) -> DataError:
  return DataError(
    f"cannot write the encoded-data cache in {cache_dir} ({error}): pass cache_dir= a writable directory"
    f" or set ${dirs.CACHE_DIR_ENV}"
  )

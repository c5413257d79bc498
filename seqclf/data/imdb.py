"""Reading the IMDB movie review dataset (aclImdb) into labelled texts.

The reviews come from one of three sources, all giving the same examples:

* an ``aclImdb`` ``.tar.gz``/``.tgz`` archive, streamed with :mod:`tarfile` (nothing is extracted to disk);
* an extracted ``aclImdb`` directory (or the directory that contains it);
* ``"tfds"``: the official TensorFlow Datasets ``imdb_reviews`` dataset, read without TensorFlow through
  ``tfds.data_source``. The data must already be prepared in the array_record format: this module never
  lets tfds download (offline, a download hangs for minutes before failing). Use
  :func:`prepare_tfds_from_archive` to prepare it once from a local archive or directory.

The archive and directory readers return each split in the same order (label ``neg`` before ``pos``, then by
the numeric review id of ``<id>_<rating>.txt``, then by file name), so both give identical arrays. The tfds
source returns tfds' stored order, which tfds shuffles by example key when it prepares the data, and texts
stripped of surrounding whitespace by the official tfds example generator (aclImdb reviews have none).
"""

import dataclasses
import io
import json
import os
import posixpath
import re
import sys
import tarfile
import zlib
from collections.abc import Iterator

import numpy as np

from seqclf.errors import ConfigError, DataError

TFDS_SOURCE = "tfds"

# Index in these tuples = sort rank; for labels it is also the label id (0 = neg, 1 = pos, as in tfds).
SPLITS = ("train", "test")
LABELS = ("neg", "pos")

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_ACLIMDB_DIR = "aclImdb"
_EXPECTED_LAYOUT = "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
_REVIEW_ID = re.compile(r"(\d+)_")

# The official tfds dataset this module reads and prepares: name, config and the version the installed
# tfds builder generates (prepared data is looked up at <data_dir>/<name>/<config>/<version>/).
_TFDS_NAME = "imdb_reviews"
_TFDS_CONFIG = "plain_text"
_TFDS_VERSION = "1.0.0"
_TFDS_FILE_FORMAT = "array_record"


@dataclasses.dataclass(frozen=True)
class TextSplit:
  """One split of the dataset.

  Attributes:
    texts: The reviews, as decoded text.
    labels: int32 array of shape [len(texts)]: 0 for a negative review, 1 for a positive one.
  """

  texts: list[str]
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class TextDataset:
  """The IMDB train and test splits (25,000 reviews each in the full dataset)."""

  train: TextSplit
  test: TextSplit


@dataclasses.dataclass(frozen=True)
class _ReviewFile:
  """One review file as read from an archive or a directory, before decoding."""

  split: str
  label: str
  file_name: str
  content: bytes

  @property
  def archive_path(self) -> str:
    """The file's path inside the official aclImdb archive, which tfds uses as the example key."""
    return posixpath.join(_ACLIMDB_DIR, self.split, self.label, self.file_name)

  @property
  def sort_key(self) -> tuple[int, int, int, str]:
    """Split, then label, then numeric review id, then file name (names without an id sort last)."""
    id_match = _REVIEW_ID.match(self.file_name)
    review_id = int(id_match[1]) if id_match else sys.maxsize
    return SPLITS.index(self.split), LABELS.index(self.label), review_id, self.file_name


def load_imdb(source: str | os.PathLike[str], *, tfds_data_dir: str | None = None) -> TextDataset:
  """Loads the IMDB reviews with their labels.

  Args:
    source: ``"tfds"`` for the prepared tfds ``imdb_reviews`` dataset, or the path of an aclImdb ``.tar.gz``
      / ``.tgz`` archive, of an extracted ``aclImdb`` directory, or of the directory that contains
      ``aclImdb/``. (A relative directory literally named ``tfds`` must be passed as ``./tfds``.)
    tfds_data_dir: Where the tfds data was prepared, for ``source="tfds"`` only. Defaults to tfds' own
      default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

  Returns:
    The train and test splits. Texts are decoded as UTF-8, undecodable bytes replaced by U+FFFD.

  Raises:
    DataError: The source is missing, unreadable, corrupt, or lacks one of the train/test × neg/pos parts;
      or, for ``"tfds"``, the dataset is not prepared in ``tfds_data_dir``.
    ConfigError: ``tfds_data_dir`` was given with a source other than ``"tfds"``.
  """
  if source == TFDS_SOURCE:
    return _load_tfds(tfds_data_dir)
  if tfds_data_dir is not None:
    raise ConfigError(f"tfds_data_dir only applies to source={TFDS_SOURCE!r}, not to {source!r}: drop it")
  reviews = sorted(_read_review_files(os.fspath(source)), key=lambda review: review.sort_key)
  return TextDataset(
    train=_text_split([review for review in reviews if review.split == "train"]),
    test=_text_split([review for review in reviews if review.split == "test"]),
  )


def source_fingerprint(source: str | os.PathLike[str], *, tfds_data_dir: str | None = None) -> str:
  """Returns a string that changes whenever the data behind ``source`` changes, for cache keys.

  Files are identified by absolute path, size and modification time; directories by the absolute path of
  the aclImdb root and the count, total size and latest modification time of their review files; tfds by
  its data directory and the modification time of the prepared dataset's info file.

  Args:
    source: As for :func:`load_imdb`.
    tfds_data_dir: As for :func:`load_imdb`.

  Raises:
    DataError: As for :func:`load_imdb`, for a missing source or tree, or unprepared tfds data.
  """
  if source == TFDS_SOURCE:
    info_path = _prepared_tfds_info_path(_resolve_tfds_data_dir(tfds_data_dir))
    return f"{TFDS_SOURCE}|{info_path}|{os.stat(info_path).st_mtime_ns}"
  path = os.path.abspath(os.fspath(source))
  _check_source_path(path)
  if os.path.isfile(path):
    stat = os.stat(path)
    return f"file|{path}|{stat.st_size}|{stat.st_mtime_ns}"
  root = _aclimdb_root(path)
  count = total_size = latest_mtime_ns = 0
  for _, _, label_dir in _label_dirs(root):
    for entry in os.scandir(label_dir):
      if _is_review_file_name(entry.name) and entry.is_file():
        stat = entry.stat()
        count += 1
        total_size += stat.st_size
        latest_mtime_ns = max(latest_mtime_ns, stat.st_mtime_ns)
  return f"dir|{root}|{count}|{total_size}|{latest_mtime_ns}"


def prepare_tfds_from_archive(archive_or_dir: str | os.PathLike[str], data_dir: str | None = None) -> None:
  """Prepares the official tfds ``imdb_reviews`` dataset offline, from a local aclImdb archive or directory.

  Uses a subclass of the official tfds builder (``tensorflow_datasets.datasets.imdb_reviews.
  imdb_reviews_dataset_builder.Builder``, config ``plain_text``) whose ``_split_generators`` hands it the
  local reviews instead of downloading the archive. The official ``_generate_examples`` then builds the
  examples (features ``text`` and ``label``, keyed by archive path as online), so the prepared train and
  test splits hold what tfds would prepare online. The ``unsupervised`` split is not prepared: the labelled
  archive does not have it. Nothing touches the network: the builder never asks its download manager for
  a file, and tfds 4.9.10 keeps its GCS lookups disabled by default. The data is written as array_record,
  which ``tfds.data_source`` reads without TensorFlow (tfds 4.9.10 also needs ``importlib_resources``,
  which it does not declare). Takes about 5 s for the full dataset; a no-op (after reading the source) if
  it is already prepared.

  Args:
    archive_or_dir: An aclImdb archive or directory, as accepted by :func:`load_imdb`.
    data_dir: The tfds data directory to write to. Defaults to tfds' default (``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Raises:
    DataError: The archive or directory is missing, unreadable or incomplete.
  """
  # Read (and so validate) everything before tfds creates any directory.
  reviews = _read_review_files(os.fspath(archive_or_dir))
  tfds = _import_tfds()
  # The official builder's module is named explicitly: tfds.text.imdb.IMDBReviews is a deprecated lazy alias.
  from tensorflow_datasets.datasets.imdb_reviews import (  # pylint: disable=g-import-not-at-top
    imdb_reviews_dataset_builder as official,
  )

  class LocalImdbReviews(official.Builder, skip_registration=True):
    """The official imdb_reviews builder, reading the reviews already loaded from a local source."""

    # Same name, so the data lands where tfds.data_source("imdb_reviews") looks; unregistered, so the
    # official builder stays the registered one.
    name = _TFDS_NAME
    # tfds reads the dataset description and citation from the builder's package directory.
    pkg_dir_path = official.Builder._get_pkg_dir_path()  # pylint: disable=protected-access

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download: the reviews were read from the local source.

      def archive_members() -> Iterator[tuple[str, io.BytesIO]]:
        # The (path, file) pairs that tfds' dl_manager.iter_archive would yield for the official archive.
        return ((review.archive_path, io.BytesIO(review.content)) for review in reviews)

      return [
        tfds.core.SplitGenerator(
          name=split,
          gen_kwargs={"archive": archive_members(), "directory": posixpath.join(_ACLIMDB_DIR, split)},
        )
        for split in SPLITS
      ]

  builder = LocalImdbReviews(
    config=_TFDS_CONFIG, data_dir=_resolve_tfds_data_dir(data_dir), file_format=_TFDS_FILE_FORMAT
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
  )


def _text_split(reviews: list[_ReviewFile]) -> TextSplit:
  return TextSplit(
    texts=[review.content.decode("utf-8", errors="replace") for review in reviews],
    labels=np.array([LABELS.index(review.label) for review in reviews], dtype=np.int32),
  )


def _check_source_path(path: str) -> None:
  if not os.path.exists(path):
    raise DataError(
      f"IMDB source {path} does not exist: pass {TFDS_SOURCE!r}, an aclImdb .tar.gz archive or an"
      " extracted aclImdb directory"
    )
  if os.path.isfile(path):
    if not path.endswith(_ARCHIVE_SUFFIXES):
      raise DataError(
        f"IMDB source {path} is a file but not a .tar.gz/.tgz archive: pass the aclImdb archive"
        " (aclImdb_v1.tar.gz) or an extracted aclImdb directory"
      )
  elif not os.path.isdir(path):
    raise DataError(
      f"IMDB source {path} is neither a file nor a directory: pass an aclImdb archive or directory"
    )


def _read_review_files(path: str) -> list[_ReviewFile]:
  """Reads every review file of an archive or directory source, in no particular order."""
  _check_source_path(path)
  if os.path.isfile(path):
    return _read_archive(path)
  return _read_directory(_aclimdb_root(path))


def _aclimdb_root(path: str) -> str:
  """Accepts both the directory that contains aclImdb/ and the aclImdb directory itself."""
  nested = os.path.join(path, _ACLIMDB_DIR)
  return nested if os.path.isdir(nested) else path


def _label_dirs(root: str) -> list[tuple[str, str, str]]:
  """Returns (split, label, directory) for the four <split>/<label> directories of a tree, checking each."""
  label_dirs = []
  for split in SPLITS:
    for label in LABELS:
      label_dir = os.path.join(root, split, label)
      if not os.path.isdir(label_dir):
        raise DataError(
          f"IMDB directory {root} has no {split}/{label}/ directory: pass the aclImdb directory (or the"
          f" directory containing it) laid out as {_EXPECTED_LAYOUT}"
        )
      label_dirs.append((split, label, label_dir))
  return label_dirs


def _is_review_file_name(file_name: str) -> bool:
  # Hidden files include the "._*" resource forks that macOS tar adds next to every file.
  return file_name.endswith(".txt") and not file_name.startswith(".")


def _read_directory(root: str) -> list[_ReviewFile]:
  reviews = []
  for split, label, label_dir in _label_dirs(root):
    for entry in os.scandir(label_dir):
      if _is_review_file_name(entry.name) and entry.is_file():
        with open(entry.path, "rb") as review_file:
          reviews.append(_ReviewFile(split, label, entry.name, review_file.read()))
  _check_every_part_present(reviews, f"IMDB directory {root}")
  return reviews


def _read_archive(path: str) -> list[_ReviewFile]:
  reviews = []
  try:
    with tarfile.open(path, "r:gz") as archive:
      for member in archive:
        location = _review_location(member.name)
        if location is not None and member.isfile():
          reviews.append(_ReviewFile(*location, archive.extractfile(member).read()))
  except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
    raise DataError(
      f"cannot read IMDB archive {path} ({type(error).__name__}: {error}): the file is corrupt or"
      " truncated; download it again"
    ) from error
  _check_every_part_present(reviews, f"IMDB archive {path}")
  return reviews


def _review_location(member_name: str) -> tuple[str, str, str] | None:
  """Returns (split, label, file name) for an archive member that is a labelled review, else None."""
  parts = posixpath.normpath(member_name).split("/")
  if parts[0] == _ACLIMDB_DIR:
    parts = parts[1:]
  if len(parts) == 3 and parts[0] in SPLITS and parts[1] in LABELS and _is_review_file_name(parts[2]):
    return parts[0], parts[1], parts[2]
  return None


def _check_every_part_present(reviews: list[_ReviewFile], described_source: str) -> None:
  if not reviews:
    raise DataError(f"{described_source} has no reviews: expected files laid out as {_EXPECTED_LAYOUT}")
  present = {(review.split, review.label) for review in reviews}
  for split in SPLITS:
    for label in LABELS:
      if (split, label) not in present:
        raise DataError(
          f"{described_source} has no reviews in {split}/{label}/: expected files laid out as"
          f" {_EXPECTED_LAYOUT}"
        )


def _import_tfds():
  """Imports tensorflow_datasets, only on the tfds paths: the import is slow and most runs never need it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds


def _resolve_tfds_data_dir(tfds_data_dir: str | None) -> str:
  if tfds_data_dir is not None:
    return os.path.abspath(tfds_data_dir)
  return os.path.abspath(_import_tfds().core.constants.DATA_DIR)


def _offline_tfds_fix(data_dir: str) -> str:
  return (
    f"pass a local aclImdb archive or directory path instead of {TFDS_SOURCE!r}, or prepare the dataset"
    " offline once with seqclf.data.imdb.prepare_tfds_from_archive(<aclImdb archive or directory>,"
    f" data_dir={data_dir!r})"
  )


def _prepared_tfds_info_path(data_dir: str) -> str:
  """Returns the info file of the prepared tfds dataset, raising DataError unless it is readable offline.

  Checked before calling into tfds, because tfds would otherwise try to download the dataset.
  """
  dataset_dir = os.path.join(data_dir, _TFDS_NAME, _TFDS_CONFIG, _TFDS_VERSION)
  info_path = os.path.join(dataset_dir, "dataset_info.json")
  try:
    with open(info_path, encoding="utf-8") as info_file:
      info = json.load(info_file)
  except FileNotFoundError:
    raise DataError(
      f"tfds dataset {_TFDS_NAME}/{_TFDS_CONFIG}:{_TFDS_VERSION} is not prepared in {data_dir} and"
      f" downloading is disabled (offline it hangs): {_offline_tfds_fix(data_dir)}"
    ) from None
  except (OSError, ValueError) as error:
    raise DataError(
      f"cannot read tfds dataset info {info_path} ({error}): {_offline_tfds_fix(data_dir)}"
    ) from error
  file_formats = [info.get("fileFormat"), *info.get("alternativeFileFormats", [])]
  if _TFDS_FILE_FORMAT not in file_formats:
    raise DataError(
      f"tfds dataset in {dataset_dir} is stored as {info.get('fileFormat')}, which needs TensorFlow,"
      f" not {_TFDS_FILE_FORMAT}: {_offline_tfds_fix('<another data_dir>')}"
    )
  return info_path


def _load_tfds(tfds_data_dir: str | None) -> TextDataset:
  data_dir = _resolve_tfds_data_dir(tfds_data_dir)
  _prepared_tfds_info_path(data_dir)
  tfds = _import_tfds()
  sources = tfds.data_source(
    f"{_TFDS_NAME}/{_TFDS_CONFIG}:{_TFDS_VERSION}", split=list(SPLITS), data_dir=data_dir, download=False
  )
  splits = []
  for source in sources:
    # One batched read is several times faster than indexing example by example.
    examples = source.__getitems__(range(len(source)))
    splits.append(
      TextSplit(
        texts=[example["text"].decode("utf-8", errors="replace") for example in examples],
        labels=np.array([example["label"] for example in examples], dtype=np.int32),
      )
    )
  train, test = splits
  return TextDataset(train=train, test=test)

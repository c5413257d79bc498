"""Reading a local aclImdb archive or directory into labelled texts.

Two local forms give the same examples in the same order:

* an ``aclImdb`` ``.tar.gz``/``.tgz`` archive, streamed with :mod:`tarfile` (nothing is extracted to disk);
* an extracted ``aclImdb`` directory (or the directory that contains it).

Each split comes in one order: label ``neg`` before ``pos``, then by the numeric review id of
``<id>_<rating>.txt``, then by file name. Texts are decoded as UTF-8, undecodable bytes replaced by U+FFFD.
"""

import dataclasses
import os
import posixpath
import re
import sys
import tarfile
import zlib

import numpy as np

from seqclf.errors import DataError

# Index in these tuples = sort rank; for labels it is also the label id (0 = neg, 1 = pos, as in tfds).
SPLITS = ("train", "test")
LABELS = ("neg", "pos")
ACLIMDB_DIR = "aclImdb"

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_EXPECTED_LAYOUT = "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
_REVIEW_ID = re.compile(r"(\d+)_")


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
class ReviewFile:
  """One review file as read from an archive or a directory, before decoding."""

  split: str
  label: str
  file_name: str
  content: bytes

  @property
  def archive_path(self) -> str:
    """The file's path inside the official aclImdb archive, which tfds uses as the example key."""
    return posixpath.join(ACLIMDB_DIR, self.split, self.label, self.file_name)

  @property
  def sort_key(self) -> tuple[int, int, int, str]:
    """Split, then label, then numeric review id, then file name (names without an id sort last)."""
    id_match = _REVIEW_ID.match(self.file_name)
    review_id = int(id_match[1]) if id_match else sys.maxsize
    return SPLITS.index(self.split), LABELS.index(self.label), review_id, self.file_name


def load(path: str | os.PathLike[str]) -> TextDataset:
  """Reads the labelled train and test reviews of an aclImdb archive or directory.

  Args:
    path: An aclImdb ``.tar.gz`` / ``.tgz`` archive, an extracted ``aclImdb`` directory, or the directory
      that contains ``aclImdb/``.

  Raises:
    DataError: The path is missing, unreadable, corrupt, or lacks one of the train/test × neg/pos parts.
  """
  reviews = sorted(read_review_files(path), key=lambda review: review.sort_key)
  return TextDataset(
    train=_text_split([review for review in reviews if review.split == "train"]),
    test=_text_split([review for review in reviews if review.split == "test"]),
  )


def fingerprint(path: str | os.PathLike[str]) -> str:
  """A string that changes whenever the reviews behind ``path`` change, for cache keys.

  A file is identified by absolute path, size and modification time; a directory by the absolute path of
  the aclImdb root and the count, total size and latest modification time of its review files.

  Raises:
    DataError: As for :func:`load`, for a missing path or tree.
  """
  path = os.path.abspath(os.fspath(path))
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


def read_review_files(path: str | os.PathLike[str]) -> list[ReviewFile]:
  """Reads every review file of an archive or directory, in no particular order (checked complete)."""
  path = os.fspath(path)
  _check_source_path(path)
  if os.path.isfile(path):
    return _read_archive(path)
  return _read_directory(_aclimdb_root(path))


def _text_split(reviews: list[ReviewFile]) -> TextSplit:
  return TextSplit(
    texts=[review.content.decode("utf-8", errors="replace") for review in reviews],
    labels=np.array([LABELS.index(review.label) for review in reviews], dtype=np.int32),
  )


def _check_source_path(path: str) -> None:
  if not os.path.exists(path):
    raise DataError(
      f"IMDB source {path} does not exist: pass an aclImdb .tar.gz archive or an extracted aclImdb"
      " directory, 'tfds', or the archive's http(s) URL"
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


def _aclimdb_root(path: str) -> str:
  """Accepts both the directory that contains aclImdb/ and the aclImdb directory itself."""
  nested = os.path.join(path, ACLIMDB_DIR)
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


def _read_directory(root: str) -> list[ReviewFile]:
  reviews = []
  for split, label, label_dir in _label_dirs(root):
    for entry in os.scandir(label_dir):
      if _is_review_file_name(entry.name) and entry.is_file():
        with open(entry.path, "rb") as review_file:
          reviews.append(ReviewFile(split, label, entry.name, review_file.read()))
  _check_every_part_present(reviews, f"IMDB directory {root}")
  return reviews


def _read_archive(path: str) -> list[ReviewFile]:
  reviews = []
  try:
    with tarfile.open(path, "r:gz") as archive:
      for member in archive:
        location = _review_location(member.name)
        if location is not None and member.isfile():
          reviews.append(ReviewFile(*location, archive.extractfile(member).read()))
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
  if parts[0] == ACLIMDB_DIR:
    parts = parts[1:]
  if len(parts) == 3 and parts[0] in SPLITS and parts[1] in LABELS and _is_review_file_name(parts[2]):
    return parts[0], parts[1], parts[2]
  return None


def _check_every_part_present(reviews: list[ReviewFile], described_source: str) -> None:
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

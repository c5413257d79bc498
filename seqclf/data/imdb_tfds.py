"""The official TensorFlow Datasets ``imdb_reviews`` dataset: read without TensorFlow, prepared offline.

:func:`load` reads the prepared dataset through ``tfds.data_source`` (array_record files, no TensorFlow).
It never lets tfds download: offline, a tfds download hangs for minutes before failing, so an unprepared
dataset is refused before tfds is called. :func:`prepare_from_archive` prepares it once from a local
aclImdb archive or directory with the official builder. tensorflow_datasets is an optional extra
(``seqclf[tfds]``), imported only here and only when used.

tfds returns its stored order, which it shuffles by example key when it prepares the data, and texts
stripped of surrounding whitespace by the official example generator (aclImdb reviews have none).
"""

import io
import json
import os
import posixpath
from collections.abc import Iterator

import numpy as np

from seqclf import optional
from seqclf.data import aclimdb
from seqclf.errors import DataError

SOURCE = "tfds"

# The official dataset: name, config and the version the installed tfds builder generates (prepared data
# is looked up at <data_dir>/<name>/<config>/<version>/).
_NAME = "imdb_reviews"
_CONFIG = "plain_text"
_VERSION = "1.0.0"
_FILE_FORMAT = "array_record"


def import_tfds():
  """Imports tensorflow_datasets (slow, and an optional extra), only on the paths that need it."""
  return optional.require("tensorflow_datasets", "tfds")


def resolve_data_dir(data_dir: str | None) -> str:
  """``data_dir`` made absolute, or tfds' default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
  if data_dir is not None:
    return os.path.abspath(data_dir)
  return os.path.abspath(import_tfds().core.constants.DATA_DIR)


def is_prepared(data_dir: str) -> bool:
  """Whether the dataset's info file exists in ``data_dir`` (:func:`info_path` checks it in full)."""
  return os.path.isfile(os.path.join(data_dir, _NAME, _CONFIG, _VERSION, "dataset_info.json"))


def info_path(data_dir: str) -> str:
  """Returns the info file of the prepared dataset, raising DataError unless it is readable offline.

  Checked before calling into tfds, because tfds would otherwise try to download the dataset.
  """
  dataset_dir = os.path.join(data_dir, _NAME, _CONFIG, _VERSION)
  path = os.path.join(dataset_dir, "dataset_info.json")
  try:
    with open(path, encoding="utf-8") as info_file:
      info = json.load(info_file)
  except FileNotFoundError:
    raise DataError(
      f"tfds dataset {_NAME}/{_CONFIG}:{_VERSION} is not prepared in {data_dir} and tfds' own"
      f" download is disabled (offline it hangs): {_offline_fix(data_dir)}"
    ) from None
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read tfds dataset info {path} ({error}): {_offline_fix(data_dir)}") from error
  file_formats = [info.get("fileFormat"), *info.get("alternativeFileFormats", [])]
  if _FILE_FORMAT not in file_formats:
    raise DataError(
      f"tfds dataset in {dataset_dir} is stored as {info.get('fileFormat')}, which needs TensorFlow,"
      f" not {_FILE_FORMAT}: {_offline_fix('<another data_dir>')}"
    )
  return path


def load(data_dir: str | None = None) -> aclimdb.TextDataset:
  """Reads the prepared train and test splits.

  Args:
    data_dir: Where the dataset was prepared. Defaults to tfds' default.

  Raises:
    DataError: The dataset is not prepared in ``data_dir`` (raised before tfds is called).
    ConfigError: tensorflow_datasets is not installed.
  """
  data_dir = resolve_data_dir(data_dir)
  info_path(data_dir)
  tfds = import_tfds()
  sources = tfds.data_source(
    f"{_NAME}/{_CONFIG}:{_VERSION}", split=list(aclimdb.SPLITS), data_dir=data_dir, download=False
  )
  splits = []
  for source in sources:
    # One batched read is several times faster than indexing example by example.
    examples = source.__getitems__(range(len(source)))
    splits.append(
      aclimdb.TextSplit(
        texts=[example["text"].decode("utf-8", errors="replace") for example in examples],
        labels=np.array([example["label"] for example in examples], dtype=np.int32),
      )
    )
  train, test = splits
  return aclimdb.TextDataset(train=train, test=test)


def prepare_from_archive(archive_or_dir: str | os.PathLike[str], data_dir: str | None = None) -> None:
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
    archive_or_dir: An aclImdb archive or directory, as accepted by :func:`seqclf.data.aclimdb.load`.
    data_dir: The tfds data directory to write to. Defaults to tfds' default.

  Raises:
    DataError: The archive or directory is missing, unreadable or incomplete.
    ConfigError: tensorflow_datasets is not installed.
  """
  # Read (and so validate) everything before tfds creates any directory.
  reviews = aclimdb.read_review_files(archive_or_dir)
  tfds = import_tfds()
  # The official builder's module is named explicitly: tfds.text.imdb.IMDBReviews is a deprecated lazy alias.
  from tensorflow_datasets.datasets.imdb_reviews import (  # pylint: disable=g-import-not-at-top
    imdb_reviews_dataset_builder as official,
  )

  class LocalImdbReviews(official.Builder, skip_registration=True):
    """The official imdb_reviews builder, reading the reviews already loaded from a local source."""

    # Same name, so the data lands where tfds.data_source("imdb_reviews") looks; unregistered, so the
    # official builder stays the registered one.
    name = _NAME
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
          gen_kwargs={"archive": archive_members(), "directory": posixpath.join(aclimdb.ACLIMDB_DIR, split)},
        )
        for split in aclimdb.SPLITS
      ]

  builder = LocalImdbReviews(config=_CONFIG, data_dir=resolve_data_dir(data_dir), file_format=_FILE_FORMAT)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
  )


def _offline_fix(data_dir: str) -> str:
  return (
    "prepare it once with seqclf.data.imdb_tfds.prepare_from_archive(<aclImdb archive or directory>,"
    f" data_dir={data_dir!r}) (the drivers' --imdb={SOURCE} downloads the official archive and does this),"
    " or pass a local aclImdb archive or directory path instead"
  )

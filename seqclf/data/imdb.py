"""The IMDB movie review dataset (aclImdb): where it comes from, resolved to something readable offline.

A source is one of

* the path of a local aclImdb ``.tar.gz``/``.tgz`` archive or extracted directory
  (read by :mod:`seqclf.data.aclimdb`);
* an ``http://`` or ``https://`` URL of such an archive, downloaded once into the cache and checksummed
  (:mod:`seqclf.data.download`); the default, with no ``$SEQCLF_IMDB``, is the official archive;
* ``"tfds"``: the official TensorFlow Datasets ``imdb_reviews`` dataset (:mod:`seqclf.data.imdb_tfds`).
  If it is not prepared, :func:`local_source` downloads the official archive and prepares it from that,
  offline, with tfds' own builder.

The archive and directory give identical arrays; tfds holds the same examples in its own order.
"""

import os
import re

from absl import logging

from seqclf.data import aclimdb, download, imdb_tfds
from seqclf.data.aclimdb import LABELS, SPLITS, TextDataset, TextSplit
from seqclf.errors import ConfigError

SOURCE_ENV = "SEQCLF_IMDB"
TFDS_SOURCE = imdb_tfds.SOURCE
# A URL's scheme (RFC 3986), for the sources that look like a URL but are not http(s).
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

__all__ = [
  "LABELS",
  "SOURCE_ENV",
  "SPLITS",
  "TFDS_SOURCE",
  "TextDataset",
  "TextSplit",
  "default_source",
  "load_imdb",
  "local_source",
  "source_fingerprint",
]


def default_source() -> str:
  """``$SEQCLF_IMDB`` if set (a path, a URL or ``tfds``), else the official archive's URL."""
  return os.environ.get(SOURCE_ENV) or download.OFFICIAL_URL


def local_source(
  source: str | os.PathLike[str],
  *,
  download_dir: str,
  sha256: str | None = None,
  tfds_data_dir: str | None = None,
) -> str:
  """Makes ``source`` readable offline and returns what :func:`load_imdb` should read.

  A URL is downloaded into ``download_dir`` (or found there already) and its local path returned. For
  ``"tfds"`` with the dataset not yet prepared, the official archive is downloaded the same way and the
  dataset prepared from it; ``"tfds"`` is returned. A local path is returned unchanged.

  Args:
    source: As for :func:`load_imdb`, or an ``http(s)://`` URL.
    download_dir: Where downloaded archives are kept.
    sha256: The expected SHA-256 of the archive at a URL source (default: known for the official URL).
    tfds_data_dir: Where the tfds data is prepared, for ``source="tfds"`` only.

  Raises:
    DataError: The download failed (nothing is kept then).
    ConfigError: ``sha256`` was given for a source that is not a URL, or is malformed; or tfds is needed
      but not installed.
  """
  if download.is_url(source):
    return download.fetch(source, directory=download_dir, sha256=sha256)
  scheme = _URL_SCHEME.match(os.fspath(source))
  if scheme:  # read as a relative path, it would be reported missing under a mangled name
    raise ConfigError(
      f"IMDB source {os.fspath(source)!r} is a URL of scheme {scheme.group(1)!r}; only http:// and https:// URLs are "
      "downloaded: pass one of those, a local aclImdb archive or directory, or 'tfds'"
    )
  if sha256:
    raise ConfigError(f"--imdb_sha256 only applies to an http(s) URL source, not to {source!r}: drop it")
  if source == TFDS_SOURCE:
    data_dir = imdb_tfds.resolve_data_dir(tfds_data_dir)
    if not imdb_tfds.is_prepared(data_dir):
      logging.warning(
        "tfds imdb_reviews is not prepared in %s: downloading the official archive to prepare it", data_dir
      )
      archive = download.fetch(download.OFFICIAL_URL, directory=download_dir)
      imdb_tfds.prepare_from_archive(archive, data_dir)
  return os.fspath(source)


def load_imdb(source: str | os.PathLike[str], *, tfds_data_dir: str | None = None) -> TextDataset:
  """Loads the IMDB reviews with their labels, from a local source (see :func:`local_source` for URLs).

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
    return imdb_tfds.load(tfds_data_dir)
  _check_no_tfds_data_dir(source, tfds_data_dir)
  return aclimdb.load(source)


def source_fingerprint(source: str | os.PathLike[str], *, tfds_data_dir: str | None = None) -> str:
  """Returns a string that changes whenever the data behind a local ``source`` changes, for cache keys.

  Files and directories as :func:`seqclf.data.aclimdb.fingerprint`; tfds by its data directory and the
  modification time of the prepared dataset's info file.

  Raises:
    DataError: As for :func:`load_imdb`, for a missing source or tree, or unprepared tfds data.
  """
  if source == TFDS_SOURCE:
    info_path = imdb_tfds.info_path(imdb_tfds.resolve_data_dir(tfds_data_dir))
    return f"{TFDS_SOURCE}|{info_path}|{os.stat(info_path).st_mtime_ns}"
  _check_no_tfds_data_dir(source, tfds_data_dir)
  return aclimdb.fingerprint(source)


def _check_no_tfds_data_dir(source, tfds_data_dir: str | None) -> None:
  if tfds_data_dir is not None:
    raise ConfigError(f"tfds_data_dir only applies to source={TFDS_SOURCE!r}, not to {source!r}: drop it")

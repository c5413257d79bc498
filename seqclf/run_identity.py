"""A run's identity: what a run directory was trained with, so that starting it again either goes on with
the same run or is refused, before anything in it is written.

The identity is the variant, the seed, every config key but those in `RESUMABLE_CHANGES`, and the data:
a digest of the encoded arrays and the vocabulary the run trains and is scored on, beside a description
of where they came from (own files by path, size and content hash with their field names, or the IMDB
source and the cache's encoding version), which names what changed when the digests differ. A moved file
with the same content is the same data; the same path with other content is not.
"""

import hashlib
import os

import numpy as np

from seqclf import checkpoint, results
from seqclf.data.cache import ENCODING_VERSION
from seqclf.errors import ConfigError, DataError

# Config keys that may change between a run and its resumption: they change neither the model, nor the
# data, nor the order it is seen in. Every engine computes the same function on one parameter layout, and
# matmul_precision only rounds the recurrent products (a run may go on with other rounding); the flags
# --preset and --profile_dir are not in the config at all.
RESUMABLE_CHANGES = ("epochs", "patience", "model.engine", "model.matmul_precision")

_FIX = "pass the data it was trained on to resume it, or another --workdir to train on this data"


def file_source(path: str) -> dict:
  """``{"path", "size", "sha256"}`` of a data file, read in chunks.

  Raises:
    DataError: The file cannot be read.
  """
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as file:
      for chunk in iter(lambda: file.read(1 << 20), b""):
        digest.update(chunk)
  except OSError as error:
    raise DataError(f"cannot read {path} ({error.strerror}): check the path") from error
  return {"path": os.path.abspath(path), "size": os.path.getsize(path), "sha256": digest.hexdigest()}


def own_files_source(train_file: str, test_file: str | None, text_field: str, label_field: str) -> dict:
  """Where a run's own data comes from: its files and the fields read from them."""
  return {
    "train_file": file_source(train_file),
    "test_file": file_source(test_file) if test_file else None,
    "text_field": text_field,
    "label_field": label_field,
  }


def imdb_source(imdb: str) -> dict:
  """Where a run's IMDB data comes from: the ``--imdb`` source and the cache's encoding version."""
  return {"imdb": imdb, "encoding_version": ENCODING_VERSION}


def data_identity(source: dict, arrays, vocab) -> dict:
  """The data part of a run's identity: ``{"source": source, "sha256": digest}``.

  Args:
    source: From `own_files_source` or `imdb_source`: what names a change.
    arrays: Every array the run trains and is scored on (train, evaluated and held-out splits), in a fixed
      order; None entries stand for an absent split.
    vocab: The `Vocabulary` that encoded them.
  """
  digest = hashlib.sha256(vocab.to_json().encode("utf-8"))
  for array in arrays:
    if array is None:
      digest.update(b"none")
      continue
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
  return {"source": source, "sha256": digest.hexdigest()}


def _describe_file(entry: dict | None) -> str:
  if entry is None:
    return "none"
  return f"{entry['path']}, {entry['size']} bytes, sha256 {entry['sha256'][:12]}"


def _describe_source(source: dict) -> str:
  if "imdb" in source:
    return f"IMDB from {source['imdb']}"
  return f"--train_file={source['train_file']['path']}"


def _source_changes(saved: dict, current: dict) -> list[str]:
  """What differs between two data sources, each as a phrase."""
  if ("imdb" in saved) != ("imdb" in current):
    return [f"the data source (was {_describe_source(saved)}, now {_describe_source(current)})"]
  if "imdb" in saved:
    changes = []
    if saved.get("imdb") != current.get("imdb"):
      changes.append(f"--imdb (was {saved.get('imdb')}, now {current.get('imdb')})")
    if saved.get("encoding_version") != current.get("encoding_version"):
      changes.append(
        f"the encoding version (was {saved.get('encoding_version')}, now {current.get('encoding_version')})"
      )
    return changes
  changes = []
  for key in ("train_file", "test_file"):
    before, now = saved.get(key), current.get(key)
    if (before and before["sha256"]) != (now and now["sha256"]):
      changes.append(f"--{key} (was {_describe_file(before)}; now {_describe_file(now)})")
  for key in ("text_field", "label_field"):
    if saved.get(key) != current.get(key):
      changes.append(f"--{key} (was {saved.get(key)!r}, now {current.get(key)!r})")
  return changes


def data_changes(saved: dict, current: dict, saved_labels: list, labels: list) -> str | None:
  """What makes ``current`` other data than ``saved`` (two `data_identity` results with their class
  names), as a phrase for an error line; None when it is the same data."""
  if saved["sha256"] == current["sha256"] and saved_labels == labels:
    return None
  changes = _source_changes(saved["source"], current["source"])
  if saved_labels != labels:
    changes.append(f"the classes (were {', '.join(saved_labels)}; now {', '.join(labels)})")
  if not changes:
    changes.append("the encoded data (the source's content or its encoding changed)")
  return "; ".join(changes)


def check_resumable(
  run_dir: str,
  config,
  variant: str,
  seed: int,
  *,
  data: dict | None = None,
  label_names: list[str] | None = None,
) -> None:
  """Refuses to start ``run_dir`` again as another run, in one line naming what differs.

  A directory without ``config.json`` is a new run. Otherwise the variant, the seed and every config key
  but `RESUMABLE_CHANGES` must be the saved ones, ``config.epochs`` may not be below the epochs already
  trained, and, when ``data`` (a `data_identity`) and ``label_names`` are given, the data must be the
  saved data (a run written before data was recorded is taken as it is).

  Raises:
    ConfigError: Another variant, seed, config key, or fewer epochs than trained.
    DataError: Other data.
  """
  if not os.path.exists(os.path.join(run_dir, checkpoint.CONFIG_FILE)):
    return
  saved, saved_variant, saved_seed, saved_labels = checkpoint.read_run_config(run_dir)
  saved_data = checkpoint.read_run_data(run_dir)
  saved, current = results.flatten(saved), results.flatten(config.to_dict())
  del current["variant"]  # compared with the run facts above (read_run_config takes it out of saved)
  if (saved_variant, saved_seed) != (variant, seed):
    raise ConfigError(
      f"{run_dir} holds a run of variant {saved_variant!r} seed {saved_seed}; use another "
      "--workdir or the same --variant/--seed to resume it"
    )
  for key in sorted(set(saved) | set(current)):
    if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key):
      raise ConfigError(
        f"{run_dir} was trained with {key}={saved.get(key)!r}, not {current.get(key)!r}; "
        "use another --workdir to train with a different config"
      )
  trained = checkpoint.complete_epochs(run_dir)
  if trained and config.epochs < trained[-1]:
    raise ConfigError(
      f"{run_dir} has {trained[-1]} epochs trained, more than --config.epochs={config.epochs}: pass "
      f"--config.epochs={trained[-1]} or more to resume it, or another --workdir"
    )
  if data is None or saved_data is None:
    return
  changed = data_changes(saved_data, data, saved_labels, list(label_names))
  if changed:
    raise DataError(f"{run_dir} was trained on other data: {changed}; {_FIX}")

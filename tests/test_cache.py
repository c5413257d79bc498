"""The encoded-dataset cache: hits, misses, corrupt entries and atomic writes."""

import os

import numpy as np
import pytest

from seqclf.data import cache
from seqclf.data.encoding import Vocabulary, encode
from seqclf.data.imdb import load_imdb
from seqclf.errors import ConfigError

OPTIONS = {"top_words": 12, "maxlen": 5}


@pytest.fixture
def counted_load_imdb(monkeypatch):
  """Replaces the cache module's load_imdb with one that records each source it reads."""
  sources_read = []

  def recording_load_imdb(source, **kwargs):
    sources_read.append(source)
    return load_imdb(source, **kwargs)

  monkeypatch.setattr(cache, "load_imdb", recording_load_imdb)
  return sources_read


def _cache_files(cache_dir):
  return sorted(os.listdir(cache_dir))


def _assert_same_encoded(encoded, other):
  for name in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(encoded, name), getattr(other, name))
  assert encoded.vocab == other.vocab


def test_encoded_dataset_matches_encoding_by_hand(tmp_path, tiny_aclimdb_archive):
  encoded = cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(tmp_path / "cache"), **OPTIONS)
  dataset = load_imdb(str(tiny_aclimdb_archive))
  vocab = Vocabulary.fit(dataset.train.texts, top_words=12)  # Fitted on train only.
  assert encoded.vocab == vocab
  np.testing.assert_array_equal(encoded.x_train, encode(dataset.train.texts, vocab, maxlen=5))
  np.testing.assert_array_equal(encoded.x_test, encode(dataset.test.texts, vocab, maxlen=5))
  np.testing.assert_array_equal(encoded.y_train, dataset.train.labels)
  np.testing.assert_array_equal(encoded.y_test, dataset.test.labels)
  for array in (encoded.x_train, encoded.y_train, encoded.x_test, encoded.y_test):
    assert array.dtype == np.int32


def test_second_call_hits_the_cache(tmp_path, tiny_aclimdb_archive, counted_load_imdb):
  cache_dir = str(tmp_path / "cache")
  first = cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=cache_dir, **OPTIONS)
  second = cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=cache_dir, **OPTIONS)
  assert len(counted_load_imdb) == 1
  _assert_same_encoded(first, second)
  assert len(_cache_files(cache_dir)) == 1


@pytest.mark.parametrize(
  "changed_option",
  [{"top_words": 13}, {"maxlen": 6}, {"padding": "post"}, {"truncating": "post"}],
)
def test_option_change_misses_the_cache(tmp_path, tiny_aclimdb_archive, counted_load_imdb, changed_option):
  cache_dir = str(tmp_path / "cache")
  cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=cache_dir, **OPTIONS)
  cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=cache_dir, **{**OPTIONS, **changed_option})
  assert len(counted_load_imdb) == 2
  assert len(_cache_files(cache_dir)) == 2


def test_changed_source_misses_the_cache(tmp_path, tiny_aclimdb, counted_load_imdb):
  cache_dir = str(tmp_path / "cache")
  first = cache.load_encoded(str(tiny_aclimdb), cache_dir=cache_dir, **OPTIONS)
  (tiny_aclimdb / "aclImdb" / "train" / "neg" / "2_1.txt").write_text("The END of the end")
  second = cache.load_encoded(str(tiny_aclimdb), cache_dir=cache_dir, **OPTIONS)
  assert len(counted_load_imdb) == 2
  assert first.vocab != second.vocab


def test_corrupt_cache_file_is_rebuilt(tmp_path, tiny_aclimdb_archive, counted_load_imdb):
  cache_dir = tmp_path / "cache"
  first = cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(cache_dir), **OPTIONS)
  (entry_name,) = _cache_files(cache_dir)
  (cache_dir / entry_name).write_bytes(b"not an npz file")
  rebuilt = cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(cache_dir), **OPTIONS)
  assert len(counted_load_imdb) == 2
  _assert_same_encoded(first, rebuilt)
  # The rebuilt entry is valid again: the next call is a hit.
  cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(cache_dir), **OPTIONS)
  assert len(counted_load_imdb) == 2


def test_interrupted_write_leaves_no_entry_and_no_temp_file(tmp_path, tiny_aclimdb_archive, monkeypatch):
  cache_dir = tmp_path / "cache"

  def savez_that_dies_halfway(file, **arrays):
    file.write(b"PK\x03\x04 partial")
    raise KeyboardInterrupt

  monkeypatch.setattr(np, "savez", savez_that_dies_halfway)
  with pytest.raises(KeyboardInterrupt):
    cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(cache_dir), **OPTIONS)
  assert _cache_files(cache_dir) == []


def test_successful_write_leaves_only_the_entry(tmp_path, tiny_aclimdb_archive):
  cache_dir = tmp_path / "cache"
  cache.load_encoded(str(tiny_aclimdb_archive), cache_dir=str(cache_dir), **OPTIONS)
  (entry_name,) = _cache_files(cache_dir)
  assert entry_name.startswith("imdb-") and entry_name.endswith(".npz")


def test_cache_dir_defaults_to_env(tmp_path, tiny_aclimdb_archive, monkeypatch):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path / "env_cache"))
  cache.load_encoded(str(tiny_aclimdb_archive), **OPTIONS)
  assert len(_cache_files(tmp_path / "env_cache")) == 1


@pytest.mark.parametrize(
  "bad_option",
  [{"top_words": 3}, {"maxlen": 0}, {"padding": "middle"}, {"truncating": "both"}],
)
def test_bad_options_fail_before_reading_data(tmp_path, monkeypatch, bad_option):
  def must_not_read(source, **kwargs):
    raise AssertionError("data was read before the options were checked")

  monkeypatch.setattr(cache, "load_imdb", must_not_read)
  with pytest.raises(ConfigError):
    cache.load_encoded(str(tmp_path / "missing.tar.gz"), cache_dir=str(tmp_path / "cache"), **bad_option)

"""Reading aclImdb from archives, directories and tfds (seqclf.data.aclimdb, .imdb_tfds, .imdb); bad inputs;
the real archive end to end."""

import collections
import os
import shutil
import tarfile

import numpy as np
import pytest

from seqclf.data import imdb_tfds
from seqclf.data.encoding import Vocabulary, encode
from seqclf.data.imdb import load_imdb, local_source
from seqclf.errors import ConfigError, DataError

# Reader order: split, then neg before pos, then numeric id (so 2_1 comes before 10_3).
EXPECTED_ORDER = {
  "train": ["neg/0_2", "neg/2_1", "neg/10_3", "pos/1_9", "pos/3_10", "pos/12_8"],
  "test": ["neg/0_2", "neg/1_4", "neg/7_1", "pos/0_7", "pos/5_10", "pos/9_9"],
}


def _expected_split(reviews, split):
  texts = [reviews[f"{split}/{name}.txt"] for name in EXPECTED_ORDER[split]]
  labels = [int(name.startswith("pos")) for name in EXPECTED_ORDER[split]]
  return texts, labels


def _assert_same_dataset(dataset, other):
  for split in ("train", "test"):
    assert getattr(dataset, split).texts == getattr(other, split).texts
    np.testing.assert_array_equal(getattr(dataset, split).labels, getattr(other, split).labels)


def _tar_gz(archive_path, tree_parent):
  with tarfile.open(archive_path, "w:gz") as archive:
    archive.add(tree_parent / "aclImdb", arcname="aclImdb")
  return archive_path


def test_directory_gives_texts_and_labels_in_order(tiny_aclimdb, tiny_aclimdb_reviews):
  dataset = load_imdb(str(tiny_aclimdb))
  for split in ("train", "test"):
    texts, labels = _expected_split(tiny_aclimdb_reviews, split)
    assert getattr(dataset, split).texts == texts
    assert getattr(dataset, split).labels.dtype == np.int32
    np.testing.assert_array_equal(getattr(dataset, split).labels, labels)


def test_archive_directory_and_aclimdb_directory_agree(tiny_aclimdb, tiny_aclimdb_archive):
  from_archive = load_imdb(str(tiny_aclimdb_archive))
  for source in (tiny_aclimdb, tiny_aclimdb / "aclImdb"):
    from_directory = load_imdb(str(source))
    _assert_same_dataset(from_archive, from_directory)
    vocab = Vocabulary.fit(from_archive.train.texts, top_words=12)
    for split in ("train", "test"):
      np.testing.assert_array_equal(
        encode(getattr(from_archive, split).texts, vocab, maxlen=5),
        encode(getattr(from_directory, split).texts, vocab, maxlen=5),
      )


def test_archive_members_with_dot_prefix_and_tgz_suffix(tmp_path, tiny_aclimdb, tiny_aclimdb_archive):
  archive_path = tmp_path / "dotted.tgz"
  with tarfile.open(archive_path, "w:gz") as archive:
    archive.add(tiny_aclimdb / "aclImdb", arcname="./aclImdb")
  _assert_same_dataset(load_imdb(str(archive_path)), load_imdb(str(tiny_aclimdb_archive)))


def test_invalid_utf8_is_replaced(tiny_aclimdb):
  (tiny_aclimdb / "aclImdb" / "train" / "pos" / "1_9.txt").write_bytes(b"caf\xe9 ok")
  assert load_imdb(str(tiny_aclimdb)).train.texts[3] == "caf\ufffd ok"


def test_missing_path(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_imdb(str(tmp_path / "nowhere.tar.gz"))


@pytest.mark.parametrize("url", ["ftp://example.com/a.tar.gz", "s3://bucket/aclImdb_v1.tar.gz"])
def test_a_url_of_another_scheme_is_refused_naming_the_supported_ones(tmp_path, url):
  """It was read as a relative path, reported missing as <cwd>/ftp:/example.com/a.tar.gz."""
  with pytest.raises(
    ConfigError, match=f"{url!r} is a URL of scheme '{url.split(':')[0]}'; only http:// and https://"
  ):
    local_source(url, download_dir=str(tmp_path))


def test_file_that_is_not_an_archive(tmp_path):
  path = tmp_path / "reviews.zip"
  path.write_bytes(b"PK")
  with pytest.raises(DataError, match=r"not a \.tar\.gz/\.tgz archive"):
    load_imdb(str(path))


def test_corrupt_archive(tmp_path):
  path = tmp_path / "corrupt.tar.gz"
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(DataError, match="corrupt or truncated"):
    load_imdb(str(path))


def test_truncated_archive(tmp_path, tiny_aclimdb_archive):
  content = tiny_aclimdb_archive.read_bytes()
  path = tmp_path / "truncated.tar.gz"
  path.write_bytes(content[: len(content) // 2])
  with pytest.raises(DataError, match="corrupt or truncated"):
    load_imdb(str(path))


def test_directory_missing_a_label_directory(tiny_aclimdb):
  shutil.rmtree(tiny_aclimdb / "aclImdb" / "test" / "neg")
  with pytest.raises(DataError, match="has no test/neg/ directory"):
    load_imdb(str(tiny_aclimdb))


def test_directory_without_aclimdb_layout(tmp_path):
  with pytest.raises(DataError, match="has no train/neg/ directory"):
    load_imdb(str(tmp_path))


def test_archive_missing_a_label_directory(tmp_path, tiny_aclimdb):
  shutil.rmtree(tiny_aclimdb / "aclImdb" / "test" / "neg")
  archive_path = _tar_gz(tmp_path / "partial.tar.gz", tiny_aclimdb)
  with pytest.raises(DataError, match="has no reviews in test/neg/"):
    load_imdb(str(archive_path))


def test_archive_without_reviews(tmp_path):
  empty_path = tmp_path / "empty.tar.gz"
  with tarfile.open(empty_path, "w:gz"):
    pass
  with pytest.raises(DataError, match="has no reviews: expected"):
    load_imdb(str(empty_path))


def test_tfds_data_dir_only_for_tfds(tiny_aclimdb, tmp_path):
  with pytest.raises(ConfigError, match="tfds_data_dir only applies"):
    load_imdb(str(tiny_aclimdb), tfds_data_dir=str(tmp_path))


def test_tfds_unprepared_fails_before_calling_tfds(tmp_path, monkeypatch):
  # Calling tfds.data_source at all could start a download, which hangs offline.
  def fail_if_called():
    raise AssertionError("tfds was called although the data is not prepared")

  monkeypatch.setattr(imdb_tfds, "import_tfds", fail_if_called)
  with pytest.raises(DataError, match="not prepared in .*prepare_from_archive") as error:
    load_imdb("tfds", tfds_data_dir=str(tmp_path))
  assert "local aclImdb archive or directory" in str(error.value)
  assert os.listdir(tmp_path) == []


def test_prepare_tfds_offline_then_load(tmp_path, tiny_aclimdb_archive):
  data_dir = str(tmp_path / "tfds")
  imdb_tfds.prepare_from_archive(str(tiny_aclimdb_archive), data_dir=data_dir)
  from_tfds = load_imdb("tfds", tfds_data_dir=data_dir)
  from_archive = load_imdb(str(tiny_aclimdb_archive))
  # tfds stores examples shuffled by key, so compare contents, not order.
  for split in ("train", "test"):
    assert collections.Counter(zip(getattr(from_tfds, split).texts, getattr(from_tfds, split).labels)) == (
      collections.Counter(zip(getattr(from_archive, split).texts, getattr(from_archive, split).labels))
    )
    assert getattr(from_tfds, split).labels.dtype == np.int32


def test_prepare_tfds_rejects_bad_source_before_writing(tmp_path):
  data_dir = tmp_path / "tfds"
  with pytest.raises(DataError, match="does not exist"):
    imdb_tfds.prepare_from_archive(str(tmp_path / "missing.tar.gz"), data_dir=str(data_dir))
  assert not data_dir.exists()


def test_real_archive_end_to_end(real_imdb_archive):
  dataset = load_imdb(str(real_imdb_archive))
  for split in (dataset.train, dataset.test):
    assert len(split.texts) == 25_000
    np.testing.assert_array_equal(np.bincount(split.labels), [12_500, 12_500])
  # The article's options: top 5000 words, 500 tokens, padded and truncated at the front.
  vocab = Vocabulary.fit(dataset.train.texts, top_words=5000)
  assert vocab.decode([4]) == ["the"]
  for split in (dataset.train, dataset.test):
    x = encode(split.texts, vocab, maxlen=500)
    assert x.shape == (25_000, 500)
    assert x.dtype == np.int32
    assert 0 <= x.min() and x.max() < 5000

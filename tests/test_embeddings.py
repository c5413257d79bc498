"""Pretrained embeddings: GloVe and word2vec text files mapped onto a vocabulary's ids."""

import gzip

import numpy as np
import pytest

from seqclf.data.embeddings import load_pretrained
from seqclf.data.encoding import Vocabulary
from seqclf.errors import DataError

# Ids: 0 pad, 1 start, 2 oov, 3 unused, then great=4, movie=5, bad=6, paris=7, zyzzyva=8; top_words 10.
_VOCAB = Vocabulary(["great", "movie", "bad", "paris", "zyzzyva"], top_words=10)
_GLOVE = (
  "the 0.1 0.2 0.3\n"
  "great 1.0 1.5 -2.0\n"
  "Bad 9 9 9\n"
  "bad -1 -0.5 0.25\n"
  "movie 3e-1 0 1\n"
  "great 7 7 7\n"
  ". . . 5 5 5\n"
  "Paris 0.5 0.5 0.5\n"
)


def _write(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content, encoding="utf-8")
  return path


def test_glove_rows_follow_the_vocabulary_ids(tmp_path):
  matrix, coverage = load_pretrained(_write(tmp_path, "glove.txt", _GLOVE), _VOCAB)
  assert matrix.dtype == np.float32 and matrix.shape == (10, 3)
  np.testing.assert_array_equal(matrix[0], 0.0)  # padding
  np.testing.assert_array_equal(matrix[4], [1.0, 1.5, -2.0])  # the first "great" wins
  np.testing.assert_array_equal(matrix[5], np.float32([0.3, 0, 1]))
  np.testing.assert_array_equal(matrix[6], [-1, -0.5, 0.25])  # exact "bad" beats the earlier "Bad"
  np.testing.assert_array_equal(matrix[7], [0.5, 0.5, 0.5])  # lowercase vocabulary, cased file
  for row in (1, 2, 3, 8, 9):  # reserved ids, a word without vector, an id without word
    assert np.all(np.abs(matrix[row]) <= 0.05) and np.any(matrix[row] != 0)
  assert coverage == pytest.approx(4 / 5)


def test_rows_without_a_vector_are_seeded(tmp_path):
  path = _write(tmp_path, "glove.txt", _GLOVE)
  first, _ = load_pretrained(path, _VOCAB, seed=3)
  again, _ = load_pretrained(path, _VOCAB, seed=3)
  other, _ = load_pretrained(path, _VOCAB, seed=4)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first[8], other[8])
  np.testing.assert_array_equal(first[4], other[4])


def test_word2vec_header_is_skipped_and_gzip_is_read(tmp_path):
  path = tmp_path / "vectors.txt.gz"
  with gzip.open(path, "wt", encoding="utf-8") as file:
    file.write("3 2\nmovie 0.5 -0.5 \nzyzzyva 1 2\r\nother 3 4\n")
  matrix, coverage = load_pretrained(path, _VOCAB, embed_dim=2)
  assert matrix.shape == (10, 2)
  np.testing.assert_array_equal(matrix[5], [0.5, -0.5])
  np.testing.assert_array_equal(matrix[8], [1, 2])
  assert coverage == pytest.approx(2 / 5)


def test_a_dimension_mismatch_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match=r"glove.txt line 1: the vectors have 3 numbers but embed_dim is 32"):
    load_pretrained(_write(tmp_path, "glove.txt", _GLOVE), _VOCAB, embed_dim=32)
  with pytest.raises(DataError, match=r"w2v.txt line 1: the vectors have 300 numbers but embed_dim is 3"):
    load_pretrained(_write(tmp_path, "w2v.txt", "2 300\ngreat 1 2 3\n"), _VOCAB, embed_dim=3)


@pytest.mark.parametrize(
  "content,message",
  [
    ("great 1 2 3\nmovie 1 2\n", r"line 2: expected a word and 3 numbers, found 2"),
    ("great 1 2 3\nmovie 1 x 3\n", r"line 2: could not convert string to float: 'x'"),
    ("great\n", r"line 1: a word without numbers"),
    ("", r"holds no word vectors"),
    ("1 3\n", r"holds no word vectors"),
  ],
)
def test_malformed_files_name_the_line(tmp_path, content, message):
  with pytest.raises(DataError, match=message):
    load_pretrained(_write(tmp_path, "bad.txt", content), _VOCAB)


def test_a_missing_file_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match=r"cannot read .*missing.txt \(No such file or directory\)"):
    load_pretrained(tmp_path / "missing.txt", _VOCAB)


def test_undecodable_bytes_do_not_stop_the_load(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes("café 1 1\ngreat 2 2\n".encode("latin-1"))
  matrix, coverage = load_pretrained(path, _VOCAB)
  np.testing.assert_array_equal(matrix[4], [2, 2])
  assert coverage == pytest.approx(1 / 5)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_a_vector_with_nan_or_inf_is_refused_with_its_line(tmp_path, value):
  """Loaded as it was, one NaN made every loss NaN and the model predict 0.5 for every text."""
  content = _GLOVE.replace("movie 3e-1 0 1", f"movie 3e-1 {value} 1")
  with pytest.raises(DataError, match="line 5: a vector holds nan or inf"):
    load_pretrained(_write(tmp_path, "glove.txt", content), _VOCAB)

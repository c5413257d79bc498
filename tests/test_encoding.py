"""Tokenization, vocabulary and encoding, checked against ids worked out by hand for the tiny tree.

Tiny train split, in reader order, and its tokens:
  neg/0_2   "Bad movie. Bad acting!"             bad movie bad acting
  neg/2_1   "The END"                            the end
  neg/10_3  "I don't like it.<br /><br />Bad."   i don't like it bad
  pos/1_9   "Great movie, great CAST."           great movie great cast
  pos/3_10  "Café: great; I LOVE it"             café great i love it
  pos/12_8  "'Great' fun"                        great fun

Counts: great 4, bad 3, movie/i/it 2 (first seen in that order), then the singletons in order of first
appearance. So ids: great 4, bad 5, movie 6, i 7, it 8, acting 9, the 10, end 11, don't 12, like 13,
cast 14, café 15, love 16, fun 17.
"""

import os

import numpy as np
import pytest

from seqclf.data import encoding
from seqclf.data.encoding import Vocabulary, encode, lengths, tokenize
from seqclf.errors import ConfigError, DataError

TRAIN_FILES = [
  "train/neg/0_2.txt",
  "train/neg/2_1.txt",
  "train/neg/10_3.txt",
  "train/pos/1_9.txt",
  "train/pos/3_10.txt",
  "train/pos/12_8.txt",
]
TEST_FILES = [
  "test/neg/0_2.txt",
  "test/neg/1_4.txt",
  "test/neg/7_1.txt",
  "test/pos/0_7.txt",
  "test/pos/5_10.txt",
  "test/pos/9_9.txt",
]
EXPECTED_WORDS = [
  "great",
  "bad",
  "movie",
  "i",
  "it",
  "acting",
  "the",
  "end",
  "don't",
  "like",
  "cast",
  "café",
  "love",
  "fun",
]


@pytest.fixture
def train_texts(tiny_aclimdb_reviews):
  return [tiny_aclimdb_reviews[path] for path in TRAIN_FILES]


@pytest.fixture
def test_texts(tiny_aclimdb_reviews):
  return [tiny_aclimdb_reviews[path] for path in TEST_FILES]


@pytest.fixture
def vocab(train_texts):
  return Vocabulary.fit(train_texts, top_words=20)


@pytest.mark.parametrize(
  "text, expected_tokens",
  [
    ("I don't like it.<br /><br />Bad.", ["i", "don't", "like", "it", "bad"]),
    ("a<br/>b<BR />c<br>d", ["a", "b", "c", "d"]),
    ("'Quoted' dogs' rock'n'roll", ["quoted", "dogs", "rock'n'roll"]),
    ("snake_case 10/10 Über-CAFÉ", ["snake", "case", "10", "10", "über", "café"]),
    ("'' -- !! ' _", []),
  ],
)
def test_tokenize(text, expected_tokens):
  assert tokenize(text) == expected_tokens


def test_vocabulary_ranks_by_frequency_then_first_appearance(vocab):
  assert vocab.words == EXPECTED_WORDS
  assert len(vocab) == 20
  assert vocab.id_of("great") == 4
  assert vocab.id_of("it") == 8
  assert vocab.id_of("fun") == 17
  assert vocab.id_of("unseen") == encoding.OOV_ID


def test_vocabulary_fits_token_lists_like_texts(train_texts, vocab):
  assert Vocabulary.fit([tokenize(text) for text in train_texts], top_words=20) == vocab


def test_small_top_words_keeps_only_ids_below_it(train_texts):
  small_vocab = Vocabulary.fit(train_texts, top_words=8)
  assert small_vocab.words == ["great", "bad", "movie", "i"]
  np.testing.assert_array_equal(
    encode(train_texts, small_vocab, maxlen=6),
    [
      [0, 1, 5, 6, 5, 2],
      [0, 0, 0, 1, 2, 2],
      [1, 7, 2, 2, 2, 5],
      [0, 1, 4, 6, 4, 2],
      [1, 2, 4, 7, 2, 2],
      [0, 0, 0, 1, 4, 2],
    ],
  )


def test_encode_train_and_test_with_start_and_pre_padding(train_texts, test_texts, vocab):
  x_train = encode(train_texts, vocab, maxlen=6)
  assert x_train.dtype == np.int32
  np.testing.assert_array_equal(
    x_train,
    [
      [0, 1, 5, 6, 5, 9],
      [0, 0, 0, 1, 10, 11],
      [1, 7, 12, 13, 8, 5],
      [0, 1, 4, 6, 4, 14],
      [1, 15, 4, 7, 16, 8],
      [0, 0, 0, 1, 4, 17],
    ],
  )
  # Unseen words (boring, plot, terrible, not, a, film, loved, miss) are OOV (2).
  np.testing.assert_array_equal(
    encode(test_texts, vocab, maxlen=6),
    [
      [0, 1, 2, 6, 5, 2],
      [0, 0, 1, 2, 2, 4],
      [0, 0, 0, 1, 5, 5],
      [0, 0, 1, 2, 4, 2],
      [0, 1, 2, 8, 12, 2],
      [0, 0, 1, 4, 4, 17],
    ],
  )


@pytest.mark.parametrize(
  "padding, truncating, expected",
  [
    # Full sequences: [1 5 6 5 9], [1 10 11], [1 7 12 13 8 5], [1 4 6 4 14], [1 15 4 7 16 8], [1 4 17].
    (
      "pre",
      "pre",
      [[5, 6, 5, 9], [0, 1, 10, 11], [12, 13, 8, 5], [4, 6, 4, 14], [4, 7, 16, 8], [0, 1, 4, 17]],
    ),
    (
      "post",
      "post",
      [[1, 5, 6, 5], [1, 10, 11, 0], [1, 7, 12, 13], [1, 4, 6, 4], [1, 15, 4, 7], [1, 4, 17, 0]],
    ),
    (
      "post",
      "pre",
      [[5, 6, 5, 9], [1, 10, 11, 0], [12, 13, 8, 5], [4, 6, 4, 14], [4, 7, 16, 8], [1, 4, 17, 0]],
    ),
    (
      "pre",
      "post",
      [[1, 5, 6, 5], [0, 1, 10, 11], [1, 7, 12, 13], [1, 4, 6, 4], [1, 15, 4, 7], [0, 1, 4, 17]],
    ),
  ],
)
def test_padding_and_truncating_sides(train_texts, vocab, padding, truncating, expected):
  np.testing.assert_array_equal(
    encode(train_texts, vocab, maxlen=4, padding=padding, truncating=truncating), expected
  )


def test_encode_without_start(train_texts, vocab):
  np.testing.assert_array_equal(
    encode(train_texts[:2], vocab, maxlen=4, add_start=False), [[5, 6, 5, 9], [0, 0, 10, 11]]
  )


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_lengths_count_non_pad_tokens(train_texts, vocab, padding):
  x = encode(train_texts + [""], vocab, maxlen=6, padding=padding, add_start=False)
  token_counts = lengths(x, padding)
  assert token_counts.dtype == np.int32
  np.testing.assert_array_equal(token_counts, [4, 2, 5, 4, 5, 2, 0])


def test_decode_round_trip(train_texts, vocab):
  x = encode(train_texts, vocab, maxlen=8)
  for row, text in zip(x, train_texts):
    assert vocab.decode(row) == ["<start>", *tokenize(text)]
  assert vocab.decode([0, 1, 2, 6]) == ["<start>", "<oov>", "movie"]


@pytest.mark.parametrize("bad_id", [3, 18, -1])
def test_decode_rejects_ids_the_vocabulary_never_produces(vocab, bad_id):
  with pytest.raises(DataError, match=f"id {bad_id} is not produced"):
    vocab.decode([4, bad_id])


def test_save_load_round_trip(tmp_path, vocab):
  path = tmp_path / "vocab.json"
  vocab.save(path)
  assert Vocabulary.load(path) == vocab
  assert Vocabulary.from_json(vocab.to_json()) == vocab
  assert os.listdir(tmp_path) == ["vocab.json"]  # No temporary file left behind.


def test_equality(train_texts, vocab):
  assert Vocabulary.fit(train_texts, top_words=20) == vocab
  assert Vocabulary.fit(train_texts, top_words=21) != vocab


@pytest.mark.parametrize(
  "content, message",
  [
    ("{not json", "not valid JSON"),
    ('{"words": ["a"]}', "not a seqclf.vocabulary"),
    (
      '{"format": "seqclf.vocabulary", "version": 1, "top_words": 5, "words": ["a", "b"]}',
      "leaves room for 1",
    ),
    ('{"format": "seqclf.vocabulary", "version": 1, "top_words": 9, "words": ["a", "a"]}', "repeat"),
  ],
)
def test_load_rejects_bad_files(tmp_path, content, message):
  path = tmp_path / "vocab.json"
  path.write_text(content)
  with pytest.raises(DataError, match=message):
    Vocabulary.load(path)


def test_load_missing_file(tmp_path):
  with pytest.raises(DataError, match="cannot read vocabulary"):
    Vocabulary.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
  "options, message",
  [
    ({"maxlen": 0}, "maxlen must be a positive integer"),
    ({"maxlen": 2.5}, "maxlen must be a positive integer"),
    ({"maxlen": True}, "maxlen must be a positive integer"),
    ({"padding": "both"}, "padding must be 'pre'"),
    ({"truncating": "middle"}, "truncating must be 'pre'"),
  ],
)
def test_bad_encode_options(train_texts, vocab, options, message):
  with pytest.raises(ConfigError, match=message):
    encode(train_texts, vocab, **{"maxlen": 6, **options})


@pytest.mark.parametrize("top_words", [3, 0, "5000", 4.0])
def test_bad_top_words(train_texts, top_words):
  with pytest.raises(ConfigError, match="top_words must be an integer above 3"):
    Vocabulary.fit(train_texts, top_words=top_words)


def test_bad_lengths_padding():
  with pytest.raises(ConfigError, match="padding must be 'pre'"):
    lengths(np.zeros((2, 3), np.int32), "left")

"""Property tests (hypothesis) for the tokenizer and encoder: any unicode text, any sizes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from seqclf.data.encoding import OOV_ID, PAD_ID, START_ID, Vocabulary, encode, tokenize

VOCAB = Vocabulary.fit(["the movie was great and the plot was thin", "a b c d e f g h"], top_words=12)
WORDS = st.sampled_from(VOCAB.words)
SIDES = st.sampled_from(["pre", "post"])


@given(st.text())
def test_any_unicode_text_tokenizes_to_lowercase_words(text):
  for token in tokenize(text):
    assert token and token == token.lower() and " " not in token and "<br" not in token


@given(st.lists(st.text(), max_size=5), st.integers(1, 40), SIDES, SIDES)
@settings(max_examples=150, deadline=None)
def test_any_text_encodes_into_range_and_shape(texts, maxlen, padding, truncating):
  x = encode(texts, VOCAB, maxlen, padding=padding, truncating=truncating)
  assert x.shape == (len(texts), maxlen)
  assert ((x >= 0) & (x < VOCAB.top_words)).all()


@given(st.lists(WORDS, max_size=30), st.integers(1, 40), SIDES, SIDES)
@settings(max_examples=150, deadline=None)
def test_padding_and_truncation_keep_the_right_end(words, maxlen, padding, truncating):
  ids = [START_ID] + [VOCAB.id_of(w) for w in words]
  row = encode([" ".join(words)], VOCAB, maxlen, padding=padding, truncating=truncating)[0].tolist()
  kept = ids[-maxlen:] if truncating == "pre" else ids[:maxlen]
  pad = [PAD_ID] * (maxlen - len(kept))
  assert row == (pad + kept if padding == "pre" else kept + pad)


@given(st.lists(WORDS, min_size=1, max_size=20))
def test_decoding_in_vocabulary_ids_gives_the_words_back(words):
  row = encode([" ".join(words)], VOCAB, 64, padding="post")[0]
  assert VOCAB.decode(row) == ["<start>", *words]


@given(st.lists(st.text(alphabet="xyzqj", min_size=1), min_size=1, max_size=5))
def test_unknown_words_become_the_oov_id(words):
  ids = encode([" ".join(words)], VOCAB, 16, padding="post")[0]
  assert set(ids[1 : len(words) + 1].tolist()) == {OOV_ID}

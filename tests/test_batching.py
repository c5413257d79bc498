"""Shuffling, fixed batches and length buckets; a bucketed, masked batch equals each review run alone."""

import jax
import numpy as np
import pytest

from seqclf import models
from seqclf.data import batching
from seqclf.errors import ConfigError


def _pre_padded(n=40, maxlen=24, seed=0, min_tokens=1):
  rng = np.random.default_rng(seed)
  n_tokens = rng.integers(min_tokens, maxlen + 1, n)
  x = np.zeros((n, maxlen), np.int32)
  for row, count in enumerate(n_tokens):
    x[row, maxlen - count :] = rng.integers(1, 30, count)
  return x, rng.integers(0, 2, n).astype(np.int32), n_tokens


def test_epoch_order_depends_on_seed_and_epoch_only():
  np.testing.assert_array_equal(batching.epoch_order(3, 2, 50), batching.epoch_order(3, 2, 50))
  assert not np.array_equal(batching.epoch_order(3, 2, 50), batching.epoch_order(3, 3, 50))
  assert sorted(batching.epoch_order(3, 2, 50)) == list(range(50))


def test_left_align_moves_tokens_to_the_front():
  x = np.array([[0, 0, 5, 6], [7, 8, 9, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batching.left_align(x, "pre"), [[5, 6, 0, 0], [7, 8, 9, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batching.left_align(x, "post"), x)


def test_bucket_lengths_are_few_rounded_and_end_at_maxlen():
  n_tokens = np.random.default_rng(0).integers(1, 500, 1000)
  lengths = batching.bucket_lengths(n_tokens, 4, 500, multiple=16)
  assert len(lengths) <= 4 and lengths[-1] == 500
  assert all(length % 16 == 0 for length in lengths[:-1]) and lengths == sorted(lengths)
  with pytest.raises(ConfigError, match="num_buckets"):
    batching.bucket_lengths(n_tokens, 9, 500)


def test_bucketed_batches_cover_every_review_once_within_its_bucket():
  x, y, _ = _pre_padded()
  aligned = batching.left_align(x, "pre")
  n_tokens = batching.token_lengths(aligned, "post")
  lengths = batching.bucket_lengths(n_tokens, 3, 24, multiple=4)
  order = batching.epoch_order(0, 1, len(x))
  seen = []
  for batch in batching.bucketed_batches(aligned, y, n_tokens, lengths, 8, order, np.random.default_rng(1)):
    assert batch["tokens"].shape[1] in lengths
    real = batch["weights"] > 0
    assert (np.count_nonzero(batch["tokens"][real], axis=1) <= batch["tokens"].shape[1]).all()
    seen += [tuple(row) for row in batch["tokens"][real]]
  expected = [tuple(row[: lengths[np.searchsorted(lengths, count)]]) for row, count in zip(aligned, n_tokens)]
  assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize("variant", ["lstm", "cnn_lstm"])
def test_bucketed_masked_batch_gives_the_logits_of_each_review_alone(variant):
  x, y, n_tokens = _pre_padded(n=12, min_tokens=2)  # a 1-token review has no pooled step to run
  aligned = batching.left_align(x, "pre")
  lengths = batching.bucket_lengths(n_tokens, 2, 24, multiple=4)
  model = models.create(variant, vocab_size=30, embed_dim=6, lstm_features=5, engine="fused")
  params = model.init(jax.random.key(0), x[:1])["params"]
  checked = 0
  for batch in batching.bucketed_batches(aligned, y, n_tokens, lengths, 5, np.arange(len(x))):
    logits = model.apply({"params": params}, batch["tokens"], batch["tokens"] != 0)
    for row, weight in zip(range(len(logits)), batch["weights"]):
      if not weight:
        continue
      review = batch["tokens"][row][batch["tokens"][row] != 0][None]
      alone = model.apply({"params": params}, review)
      np.testing.assert_allclose(logits[row], alone[0], rtol=1e-5, atol=1e-6)
      checked += 1
  assert checked == len(x)

"""Batches: epoch shuffling, fixed-shape batches, and length buckets. NumPy only, no model code.

Every batch is a dict ``{"tokens": [B, L] int32, "labels": [B] int32, "weights": [B] float32}``; rows
with weight 0 fill up a last partial batch so shapes (and compiled steps) never change.

Length bucketing: IMDB reviews average ~235 tokens against a padded length of 500, so more than half of
a fixed-length epoch is padding. `bucketed_batches` groups reviews of similar length and cuts each batch
to its bucket's length (at most a handful of lengths, so compilation stays bounded). Reviews are first
moved to the front of their row (`left_align`): the LSTM then masks the trailing padding exactly, and
the convolution front end sees padding where its own SAME padding would be.
"""

import numpy as np

from seqclf.data.encoding import PAD_ID
from seqclf.data.encoding import lengths as token_lengths
from seqclf.errors import ConfigError


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The shuffled example order of ``epoch``: a function of (seed, epoch) alone, so a resumed run
  replays exactly the order an uninterrupted one would have used."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def _batch(x, y, index, batch_size, length=None):
  weights = np.ones(batch_size, np.float32)
  if len(index) < batch_size:
    weights[len(index) :] = 0.0
    index = np.concatenate([index, np.zeros(batch_size - len(index), index.dtype)])
  tokens = x[index] if length is None else x[index, :length]
  return {"tokens": tokens, "labels": y[index], "weights": weights}


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, order: np.ndarray | None = None):
  """Yields fixed-shape batches in ``order``; the last one is filled up with weight-0 rows."""
  order = np.arange(len(x)) if order is None else order
  for start in range(0, len(order), batch_size):
    yield _batch(x, y, order[start : start + batch_size], batch_size)


def left_align(x: np.ndarray, padding: str) -> np.ndarray:
  """Moves each row's tokens to the front (right padding), whichever side ``x`` was padded on."""
  if padding == "post":
    return x
  steps = x.shape[1]
  n_tokens = token_lengths(x, padding)
  source = (np.arange(steps)[None, :] + (steps - n_tokens)[:, None]) % steps
  aligned = np.take_along_axis(x, source, axis=1)
  aligned[np.arange(steps)[None, :] >= n_tokens[:, None]] = PAD_ID
  return aligned


def bucket_lengths(n_tokens: np.ndarray, num_buckets: int, maxlen: int, multiple: int = 16) -> list[int]:
  """Padded lengths for ``num_buckets`` buckets holding about equal numbers of reviews.

  Each length is a quantile of the token counts rounded up to a ``multiple`` (so the convolution's pool
  windows and SIMD widths line up), the last one is ``maxlen``; duplicates collapse.
  """
  if not 1 <= num_buckets <= 8:
    raise ConfigError(
      f"--config.num_buckets must be in 1..8 (each bucket is one compiled shape), got {num_buckets}"
    )
  quantiles = np.quantile(n_tokens, np.arange(1, num_buckets) / num_buckets) if num_buckets > 1 else []
  rounded = [min(maxlen, int(np.ceil(max(q, 1) / multiple) * multiple)) for q in quantiles]
  return sorted(set(rounded) | {maxlen})


def bucketed_batches(
  x_aligned: np.ndarray,
  y: np.ndarray,
  n_tokens: np.ndarray,
  lengths: list[int],
  batch_size: int,
  order: np.ndarray,
  shuffle_rng: np.random.Generator | None = None,
):
  """Yields batches of reviews from one bucket each, cut to that bucket's length.

  ``order`` fixes which reviews share a batch (pass the epoch's shuffled order for training, arange for
  evaluation); ``shuffle_rng`` then shuffles the order of the batches, so buckets interleave.
  """
  bucket_of = np.searchsorted(np.asarray(lengths), n_tokens[order], side="left")
  plan = []
  for bucket, length in enumerate(lengths):
    members = order[bucket_of == bucket]
    plan += [(members[start : start + batch_size], length) for start in range(0, len(members), batch_size)]
  if shuffle_rng is not None:
    plan = [plan[i] for i in shuffle_rng.permutation(len(plan))]
  for index, length in plan:
    yield _batch(x_aligned, y, index, batch_size, length)

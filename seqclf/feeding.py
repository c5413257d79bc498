"""How an epoch's batches reach the train step: host batches (fixed length or length buckets), or
training arrays resident on the device(s) with the epoch's order computed there.

  * fixed-length host batches (the article's setup): one batch per step, the last one filled with
    weight-0 rows so nothing recompiles;
  * ``num_buckets > 0``: reviews moved to the front of their rows and grouped by length
    (`seqclf.data.batching`), one compiled step per bucket length; the model is masked;
  * ``device_resident``: the arrays are put on the device(s) once; `device_epoch_plan` shuffles on device
    and `DeviceEpochs` splits an epoch into ``steps_per_dispatch`` chunks (`seqclf.train.make_train_chunk`
    runs one chunk per jitted call).
"""

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.data import batching

# Bucket lengths are rounded up to a multiple of this: even for the CNN's pool windows, and whole
# SIMD/tile widths for the matmuls.
BUCKET_MULTIPLE = 16


def batch_spec(batch_size: int, length: int, sharding=None) -> dict:
  """The shapes of a batch, without allocating it (a batch can be too large to exist)."""
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  return {
    "tokens": spec((batch_size, length), jnp.int32),
    "labels": spec((batch_size,), jnp.int32),
    "weights": spec((batch_size,), jnp.float32),
  }


class HostFeeder:
  """Host batches for training and evaluation: fixed length, or length buckets.

  ``lengths`` are the sequence lengths the steps are compiled for (one, or one per bucket).
  """

  def __init__(self, data, config, seed: int):
    self.seed, self.batch_size, self.eval_batch_size = seed, config.batch_size, config.eval_batch_size
    self.num_buckets = config.get("num_buckets", 0)
    self.x_train, self.y_train, self.x_test, self.y_test = (
      data.x_train,
      data.y_train,
      data.x_test,
      data.y_test,
    )
    if self.num_buckets:
      padding = config.get("padding", "pre")
      self.x_train = batching.left_align(data.x_train, padding)
      self.x_test = batching.left_align(data.x_test, padding)
      self.n_train = batching.token_lengths(self.x_train, "post")
      self.n_test = batching.token_lengths(self.x_test, "post")
      self.lengths = batching.bucket_lengths(
        self.n_train, self.num_buckets, data.x_train.shape[1], BUCKET_MULTIPLE
      )
    else:
      self.lengths = [data.x_train.shape[1]]

  def train(self, epoch: int):
    """The epoch's training batches, in the order `batching.epoch_order` gives for (seed, epoch)."""
    order = batching.epoch_order(self.seed, epoch, len(self.x_train))
    if not self.num_buckets:
      return batching.batches(self.x_train, self.y_train, self.batch_size, order)
    return batching.bucketed_batches(
      self.x_train,
      self.y_train,
      self.n_train,
      self.lengths,
      self.batch_size,
      order,
      np.random.default_rng([self.seed, epoch, 1]),
    )

  def test(self):
    """The evaluation split's batches, in order."""
    if not self.num_buckets:
      return batching.batches(self.x_test, self.y_test, self.eval_batch_size)
    return batching.bucketed_batches(
      self.x_test, self.y_test, self.n_test, self.lengths, self.eval_batch_size, np.arange(len(self.x_test))
    )

  def steps_per_epoch(self) -> int:
    if not self.num_buckets:
      return -(-len(self.x_train) // self.batch_size)
    bucket_of = np.searchsorted(np.asarray(self.lengths), self.n_train, side="left")
    return int(sum(-(-np.sum(bucket_of == b) // self.batch_size) for b in range(len(self.lengths))))


def device_epoch_plan(shuffle_key, epoch, n: int, batch_size: int):
  """The epoch's shuffled order, computed on device, padded to whole batches, and its weights."""
  steps = -(-n // batch_size)
  order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
  padding = steps * batch_size - n
  order = jnp.concatenate([order, jnp.zeros(padding, order.dtype)])
  weights = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(padding, jnp.float32)])
  return order, weights


class DeviceEpochs:
  """Device-resident epochs: each epoch's order on device, and its steps split into dispatch chunks.

  ``chunks`` lists the steps of each jitted call of an epoch (``steps_per_dispatch`` each, 0: the whole
  epoch in one, the remainder last).
  """

  def __init__(self, n: int, batch_size: int, steps_per_epoch: int, steps_per_dispatch: int, sharding):
    self.n, self.batch_size = n, batch_size
    chunk = steps_per_dispatch or steps_per_epoch
    self.chunks = [chunk] * (steps_per_epoch // chunk) + (
      [steps_per_epoch % chunk] if steps_per_epoch % chunk else []
    )
    self._plan = jax.jit(device_epoch_plan, static_argnums=(2, 3), out_shardings=sharding)

  def plan(self, shuffle_key, epoch: int):
    """``(order, weights)`` of ``epoch``: example indices padded to whole batches, 0 weights on the padding."""
    return self._plan(shuffle_key, epoch, self.n, self.batch_size)

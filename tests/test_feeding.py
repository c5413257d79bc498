"""`seqclf.feeding`: host batches (fixed and bucketed) and device-resident epoch plans."""

import jax
import numpy as np

from seqclf import feeding
from tests import synthetic


def test_fixed_length_batches_cover_the_epoch_in_steps_per_epoch_steps():
  data, config = synthetic.signal_task(n_train=100, n_test=30), synthetic.config()
  feeder = feeding.HostFeeder(data, config, seed=0)
  batches = list(feeder.train(1))
  assert feeder.lengths == [16] and len(batches) == feeder.steps_per_epoch() == 4  # 100 / 32
  assert sum(batch["weights"].sum() for batch in batches) == 100
  assert [b["tokens"].shape for b in feeder.test()] == [(64, 16)]  # 30 rows, padded
  first, again = list(feeder.train(2)), list(feeding.HostFeeder(data, config, seed=0).train(2))
  assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(first, again))  # (seed, epoch)


def test_bucketed_batches_use_the_bucket_lengths_and_count_their_steps():
  data, config = synthetic.signal_task(n_train=200, n_test=50, steps=64), synthetic.config()
  config.maxlen, config.num_buckets = 64, 3
  feeder = feeding.HostFeeder(data, config, seed=0)
  assert all(length % feeding.BUCKET_MULTIPLE == 0 for length in feeder.lengths)
  batches = list(feeder.train(1))
  assert len(batches) == feeder.steps_per_epoch()
  assert {batch["tokens"].shape[1] for batch in batches} <= set(feeder.lengths)
  assert sum(batch["weights"].sum() for batch in batches) == 200
  for batch in batches:  # reviews moved to the front: padding only at the end
    real = batch["tokens"][batch["weights"] > 0]
    assert (real[:, 0] != 0).all()


def test_batch_spec_allocates_nothing():
  spec = feeding.batch_spec(10**6, 10**6)
  assert spec["tokens"].shape == (10**6, 10**6) and isinstance(spec["tokens"], jax.ShapeDtypeStruct)


def test_device_epochs_plan_every_example_once_and_split_into_chunks():
  epochs = feeding.DeviceEpochs(n=10, batch_size=4, steps_per_epoch=3, steps_per_dispatch=2, sharding=None)
  assert epochs.chunks == [2, 1]
  order, weights = epochs.plan(jax.random.PRNGKey(0), 1)
  assert sorted(np.asarray(order)[:10].tolist()) == list(range(10)) and np.asarray(weights).sum() == 10
  assert order.shape == weights.shape == (12,)
  assert not np.array_equal(order, epochs.plan(jax.random.PRNGKey(0), 2)[0])  # a new order per epoch
  whole = feeding.DeviceEpochs(n=10, batch_size=4, steps_per_epoch=3, steps_per_dispatch=0, sharding=None)
  assert whole.chunks == [3]

"""The training loop's pieces: fixed-shape batches, weighted loss, config validation."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from seqclf import train
from seqclf.data import batching
from seqclf.errors import ConfigError


def test_batches_cover_every_example_once_and_pad_the_last_with_weight_zero():
  x = np.arange(10)[:, None].repeat(3, axis=1)
  y = np.arange(10) % 2
  order = np.random.default_rng(0).permutation(10)
  got = list(batching.batches(x, y, 4, order))
  assert [b["tokens"].shape for b in got] == [(4, 3)] * 3
  assert [b["weights"].tolist() for b in got] == [[1] * 4, [1] * 4, [1, 1, 0, 0]]
  seen = np.concatenate([b["tokens"][b["weights"] > 0, 0] for b in got])
  np.testing.assert_array_equal(seen, order)


def test_padding_rows_do_not_change_loss_or_metrics():
  logits = jnp.array([2.0, -1.0, 0.5, 9.0])
  labels = jnp.array([1, 0, 0, 0])
  loss, metrics = train.loss_and_metrics(logits, labels, jnp.array([1.0, 1.0, 1.0, 0.0]))
  expected = optax.sigmoid_binary_cross_entropy(logits[:3], labels[:3].astype(jnp.float32)).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(metrics["correct"]) == 2.0 and float(metrics["count"]) == 3.0


def test_multiclass_loss_is_sparse_cross_entropy():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
  labels = jnp.array([0, 1])
  loss, metrics = train.loss_and_metrics(logits, labels, jnp.ones(2))
  np.testing.assert_allclose(loss, optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
                             rtol=1e-6)
  assert float(metrics["correct"]) == 1.0


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("eval_batch_size", -1), ("epochs", 0),
                                       ("maxlen", 0), ("top_words", -3), ("learning_rate", 0.0)])
def test_validate_rejects_non_positive_sizes(key, value):
  config = default.get_config()
  config[key] = value
  with pytest.raises(ConfigError, match=key):
    train.validate(config)


def test_keras_adam_epsilon():
  assert default.get_config().adam_eps == 1e-7

"""The variants: Keras parameter counts, learning, dropout behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import models, train
from seqclf.errors import ConfigError
from tests import synthetic


@pytest.mark.parametrize("variant", list(models.VARIANTS))
def test_parameter_counts_equal_keras(variant):
  model = models.create(variant, vocab_size=5000, embed_dim=32, lstm_features=100)
  params = model.init(jax.random.key(0), jnp.zeros((1, 500), jnp.int32))["params"]
  assert models.param_count(params) == models.KERAS_PARAM_COUNTS[variant]


@pytest.mark.parametrize("variant", list(models.VARIANTS))
def test_every_variant_learns_a_separable_task(variant):
  data = synthetic.signal_task()
  config = synthetic.config()
  model = models.create(variant, vocab_size=config.top_words, **config.model)
  record, _ = train.fit(model, data, config, seed=0)
  assert record["epochs"][-1]["test_acc"] >= 0.95, record["epochs"][-1]


def test_dropout_is_off_at_eval_and_deterministic_under_a_seed():
  model = models.create("lstm_dropout", vocab_size=40, embed_dim=8, lstm_features=6)
  tokens = jnp.asarray(synthetic.signal_task(n_train=8, n_test=1).x_train)
  params = model.init(jax.random.key(0), tokens)["params"]
  apply = lambda train, seed=0: model.apply(
    {"params": params}, tokens, train=train, rngs={"dropout": jax.random.key(seed)}
  )
  np.testing.assert_array_equal(apply(False, 1), apply(False, 2))  # eval ignores the dropout RNG
  np.testing.assert_array_equal(apply(True, 1), apply(True, 1))
  assert not np.allclose(apply(True, 1), apply(True, 2))
  assert not np.allclose(apply(True, 1), apply(False))


@pytest.mark.parametrize(
  "variant,fields",
  [("lstm", {}), ("cnn_lstm", {}), ("lstm", {"bidirectional": True, "lstm_layers": 2})],
  ids=["lstm", "cnn_lstm", "stacked_bidirectional"],
)
@pytest.mark.parametrize("length", [6, 7])
def test_mask_makes_padding_invisible(variant, fields, length):
  """With a mask, a review gives the same logit alone, right-padded, and left-padded by an even count."""
  model = models.create(variant, vocab_size=40, embed_dim=8, lstm_features=6, **fields)
  review = jnp.arange(7, 7 + length)[None]
  left = jnp.pad(review, ((0, 0), (4, 0)))
  right = jnp.pad(review, ((0, 0), (0, 5)))
  params = model.init(jax.random.key(0), left)["params"]
  alone = model.apply({"params": params}, review, jnp.ones_like(review, bool))
  for padded in (left, right):
    np.testing.assert_allclose(
      model.apply({"params": params}, padded, padded != 0), alone, rtol=1e-5, atol=1e-6
    )
  assert not np.allclose(model.apply({"params": params}, left), alone)  # unmasked padding is read


def test_multiclass_gives_one_logit_per_class():
  model = models.create("lstm", vocab_size=40, embed_dim=8, lstm_features=6, num_classes=5)
  tokens = jnp.ones((3, 7), jnp.int32)
  logits = model.apply(model.init(jax.random.key(0), tokens), tokens)
  assert logits.shape == (3, 5)


def test_unknown_variant_and_field_are_config_errors():
  with pytest.raises(ConfigError, match="unknown variant 'rnn'"):
    models.create("rnn")
  with pytest.raises(ConfigError, match="unknown model field"):
    models.create("lstm", hidden=3)
  with pytest.raises(ConfigError, match="unknown variant 'x'"):
    models.parse_variants("lstm,x")
  assert models.parse_variants("all") == list(models.VARIANTS)


def test_stacked_bidirectional_model_learns_the_separable_task():
  data = synthetic.signal_task()
  config = synthetic.config(epochs=8)
  config.model.lstm_layers = 2
  config.model.bidirectional = True
  model = models.create("lstm", vocab_size=config.top_words, **config.model)
  record, state = train.fit(model, data, config, seed=0)
  assert {"lstm", "lstm_1", "lstm_backward", "lstm_backward_1"} <= set(state.params)
  assert record["epochs"][-1]["test_acc"] >= 0.95


def test_stacked_bidirectional_model_keeps_the_parameter_names_of_earlier_run_directories():
  """models.py builds its LSTMs from the reusable layers; their parameters stay where checkpoints have them."""
  model = models.create(
    "lstm", vocab_size=40, embed_dim=8, lstm_features=6, bidirectional=True, lstm_layers=2
  )
  params = model.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))["params"]
  assert set(params) == {"embedding", "head", "lstm", "lstm_backward", "lstm_1", "lstm_backward_1"}
  assert params["lstm_1"]["kernel"].shape == (12, 24)


def test_a_model_asking_an_engine_for_what_it_lacks_is_refused_when_built():
  model = models.create(
    "lstm", vocab_size=40, embed_dim=8, lstm_features=6, engine="scan", matmul_precision="tensorfloat32"
  )
  with pytest.raises(ConfigError, match="'scan' has no matmul_precision='tensorfloat32'; .*pallas"):
    model.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))

"""The training loop's pieces: fixed-shape batches, weighted loss, config validation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqclf import checkpoint, models, train
from seqclf.configs import default
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
  np.testing.assert_allclose(
    loss, optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), rtol=1e-6
  )
  assert float(metrics["correct"]) == 1.0


@pytest.mark.parametrize(
  "key,value",
  [
    ("batch_size", 0),
    ("eval_batch_size", -1),
    ("epochs", 0),
    ("maxlen", 0),
    ("top_words", -3),
    ("learning_rate", 0.0),
  ],
)
def test_validate_rejects_non_positive_sizes(key, value):
  config = default.get_config()
  config[key] = value
  with pytest.raises(ConfigError, match=key):
    train.validate(config)


def test_keras_adam_epsilon():
  assert default.get_config().adam_eps == 1e-7


def _tiny_state_and_batch():
  import jax

  from seqclf import models

  model = models.create("lstm", vocab_size=20, embed_dim=4, lstm_features=3)
  tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  state = train.TrainState.create(
    apply_fn=model.apply, params=params, tx=train.make_optimizer(default.get_config())
  )
  batch = {"tokens": tokens, "labels": np.array([0, 1], np.int32), "weights": np.ones(2, np.float32)}
  return model, state, batch


def test_a_nan_loss_is_reported_with_its_step():
  import jax

  model, state, batch = _tiny_state_and_batch()
  step = jax.jit(train.make_train_step(model))
  key = jax.random.PRNGKey(1)
  state, first = step(state, batch, key)
  train.check_finite(first, epoch=1)  # a finite loss passes
  broken = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
  _, second = step(broken, batch, key)
  total = train.sum_metrics(first, second)
  with pytest.raises(train.DivergedError, match=r"at step 2 \(epoch 3\).*grad_clip_norm"):
    train.check_finite(total, epoch=3)


def test_gradient_clipping_happens_before_adam():
  config = default.get_config()
  config.grad_clip_norm = 1e-3
  tx = train.make_optimizer(config)
  params = {"w": jnp.zeros(3)}
  _, opt_state = tx.update({"w": jnp.array([1e6, 0.0, 0.0])}, tx.init(params), params)
  adam_state = opt_state[1][0]  # chain(clip, adam): Adam's first moment saw the clipped gradient
  np.testing.assert_allclose(adam_state.mu["w"], [0.1 * 1e-3, 0.0, 0.0], rtol=1e-5)


@pytest.mark.parametrize("engine", ["scan", "fused", "cpu_kernel"])
def test_one_nan_embedding_row_trips_the_guard_with_every_engine(engine):
  """cpu_kernel turned a NaN input into finite numbers, so the guard never fired and a NaN model was saved."""
  import jax

  from seqclf import models

  if engine == "cpu_kernel" and jax.default_backend() != "cpu":
    pytest.skip("the cpu_kernel engine runs on CPU only")
  model = models.create("lstm", vocab_size=20, embed_dim=4, lstm_features=3, engine=engine)
  tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  params = {**params, "embedding": params["embedding"].at[7].set(jnp.nan)}  # token 7 is in the batch
  state = train.TrainState.create(
    apply_fn=model.apply, params=params, tx=train.make_optimizer(default.get_config())
  )
  batch = {"tokens": tokens, "labels": np.array([0, 1], np.int32), "weights": np.ones(2, np.float32)}
  _, metrics = jax.jit(train.make_train_step(model))(state, batch, jax.random.PRNGKey(1))
  with pytest.raises(train.DivergedError, match=r"at step 1 \(epoch 1\)"):
    train.check_finite(metrics, epoch=1)


CONFIG_CHANGES = {
  # field: (value, words of the refusal)
  "model.lstm_features": (0, "lstm_features must be an integer >= 1"),
  "model.embed_dim": (0, "embed_dim must be an integer >= 1"),
  "model.lstm_layers": (0, "lstm_layers must be an integer >= 1"),
  "model.engine": ("bogus", "unknown LSTM engine 'bogus'"),
  "model.matmul_precision": ("float64", "matmul_precision must be one of"),
  "model.bidirectional": (1, "bidirectional must be True or False"),
  "num_buckets": (100, "num_buckets must be in 0..8"),
  "steps_per_dispatch": (-1, "steps_per_dispatch must be an integer >= 0"),
  "padding": ("middle", "padding must be 'pre' or 'post'"),
  "truncating": ("both", "truncating must be 'pre' or 'post'"),
  "top_words": (3, "top_words must be above 3"),
  "batch_size": (True, "batch_size must be a positive integer"),
  "adam_eps": (float("inf"), "adam_eps must be a finite number > 0"),
  "grad_clip_norm": (-1.0, "grad_clip_norm must be a finite number >= 0"),
  "learning_rate": (float("nan"), "learning_rate must be in (0, 10)"),
  "mask": ("yes", "mask must be True or False"),
}


@pytest.mark.parametrize("field", list(CONFIG_CHANGES))
def test_every_config_field_is_checked_before_training(field):
  value, words = CONFIG_CHANGES[field]
  config = default.get_config()
  *parents, leaf = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  with node.ignore_type():
    node[leaf] = value
  with pytest.raises(ConfigError, match=re.escape(words)):
    train.validate(config)


@pytest.mark.parametrize("key", ["variant", "variants"])
def test_the_engine_is_held_to_the_cell_of_the_variants_the_run_trains(key):
  """A GRU variant's engine was held to the LSTM's: an error named the LSTM, or none was raised."""
  config = default.get_config()
  with config.ignore_type():
    config[key] = "gru"
  config.model.engine, config.model.recurrent_activation = "cpu_kernel", "hard_sigmoid"
  with pytest.raises(
    ConfigError, match=re.escape("GRU engine 'cpu_kernel' has no recurrent_activation='hard_sigmoid'")
  ):
    train.validate(config)


def test_the_engine_is_held_to_the_mask_the_config_asks_for():
  config = default.get_config()
  config.model.engine, config.mask = "flax", True
  with pytest.raises(ConfigError, match="LSTM engine 'flax' has no padding masks"):
    train.validate(config)


@pytest.mark.parametrize(
  "fields,words",
  [
    ({"lstm_input_dropout": 1.0}, "lstm_input_dropout must be a dropout rate in [0, 1)"),
    ({"word_dropout": -0.1}, "word_dropout must be a dropout rate"),
    ({"conv_filters": -2}, "conv_filters must be an integer >= 0"),
    ({"pool_size": 0}, "pool_size must be an integer >= 1"),
    ({"num_classes": 1}, "at least 2 classes"),
    ({"vocab_size": 0}, "vocab_size must be an integer >= 1"),
  ],
)
def test_model_fields_are_checked_when_a_model_is_created(fields, words):
  from seqclf import models

  with pytest.raises(ConfigError, match=re.escape(words)):
    models.check_fields(fields)


@pytest.mark.parametrize("seed", [-1, 2**32, 10**20, 1.5, True])
def test_seeds_a_prng_key_or_numpy_would_refuse_are_refused(seed):
  """-1 and 10**20 gave a ValueError or OverflowError traceback from numpy or jax."""
  with pytest.raises(ConfigError, match="--seed takes integers from 0 to 4294967295"):
    train.check_seed(seed)
  train.check_seed(0)
  train.check_seed(2**32 - 1)


def test_a_thread_count_that_is_not_a_number_is_one_line(monkeypatch):
  from seqclf.rnn.engines import cpu_kernel

  monkeypatch.setenv("SEQCLF_LSTM_THREADS", "abc")
  with pytest.raises(ConfigError, match="SEQCLF_LSTM_THREADS must be a number of threads, got 'abc'"):
    cpu_kernel.default_num_threads()
  for value in ("0", "-3"):  # they were taken as 1
    monkeypatch.setenv("SEQCLF_LSTM_THREADS", value)
    with pytest.raises(ConfigError, match=f"must be a positive number of threads, got '{value}'"):
      cpu_kernel.default_num_threads()


def test_patience_counts_from_the_epoch_reported_and_kept_as_the_best(tmp_path):
  """Of equal accuracies early stopping counted from the first, the best checkpoint was the later."""
  accs = [0.5, 0.8, 0.7, 0.8, 0.6]
  assert train.epochs_since_best([{"test_acc": acc} for acc in accs]) == 3  # from epoch 2, not 4
  model = models.create("lstm", vocab_size=10, embed_dim=2, lstm_features=2, engine="scan")
  state = train.create_train_state(model, default.get_config(), jax.random.PRNGKey(0), 3)
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    for epoch, acc in enumerate(accs, 1):
      checkpointer.save(epoch, state, history=[], metric=acc)
    assert checkpointer.best_epoch() == 2 and checkpoint.complete_epochs(str(tmp_path)) == [2, 5]

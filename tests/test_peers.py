"""`seqclf.benchmarks.peers`: PyTorch and Keras peers have the article's sizes, train, and return fit's record."""

import dataclasses
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import models, train
from seqclf.benchmarks import peers
from seqclf.configs import default
from seqclf.data import batching
from seqclf.errors import ConfigError
from tests import synthetic

# Trainable weights as NumPy arrays, to see whether a call changed them.
WEIGHTS = {
  "torch": lambda trainer: [p.detach().cpu().numpy().copy() for p in trainer.model.parameters()],
  "keras": lambda trainer: [np.array(variable.value) for variable in trainer.model.weights],
}


def peer_module(name):
  """The peer's module, or a skip when its framework is not installed.

  Not `pytest.importorskip("keras")`: a bare ``import keras`` picks the TensorFlow backend and fails for
  want of TensorFlow, which would skip for the wrong reason; the peer module selects JAX first.
  """
  if importlib.util.find_spec(peers.PEERS[name].requires) is None:
    pytest.skip(f"{peers.PEERS[name].requires} is not installed: {peers.INSTALL_HINT}")
  return peers.load_peer(name)


def tiny_setup():
  return synthetic.signal_task(n_train=80, n_test=40), synthetic.config(epochs=1)


@pytest.mark.parametrize("variant", list(models.VARIANTS))
@pytest.mark.parametrize("name", list(peers.PEERS))
def test_parameter_counts_equal_keras(name, variant):
  module = peer_module(name)
  trainer = module.create_trainer(variant, default.get_config(), seed=0)
  assert trainer.param_count == models.KERAS_PARAM_COUNTS[variant]


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_warm_up_changes_nothing_and_a_step_trains(name):
  module = peer_module(name)
  data, config = tiny_setup()
  trainer = module.create_trainer("lstm_recurrent_dropout", config, seed=0)
  batch = next(batching.batches(data.x_train, data.y_train, config.batch_size))
  before = WEIGHTS[name](trainer)
  trainer.warm_up({**batch, "weights": np.zeros_like(batch["weights"])}, data.x_test[:8])
  for old, new in zip(before, WEIGHTS[name](trainer)):
    np.testing.assert_array_equal(old, new)
  if name == "keras":  # Adam's bias correction starts from step 0 again
    assert int(trainer.model.optimizer.iterations.value) == 0
  loss, accuracy = trainer.train_epoch([batch])
  assert np.isfinite(loss) and 0 <= accuracy <= 1
  assert any(not np.array_equal(old, new) for old, new in zip(before, WEIGHTS[name](trainer)))
  logits = trainer.predict(data.x_test[:8])
  assert logits.shape == (8,) and np.isfinite(logits).all()


@pytest.mark.parametrize("variant", list(models.VARIANTS))
@pytest.mark.parametrize("name", list(peers.PEERS))
def test_fit_peer_returns_the_record_train_fit_returns(name, variant):
  peer_module(name)
  data, config = tiny_setup()
  seen = []
  record = peers.fit_peer(name, variant, data, config, seed=1, on_epoch=seen.append)

  flax_model = models.create(variant, vocab_size=config.top_words, **config.model)
  flax_params = flax_model.init(jax.random.key(0), jnp.asarray(data.x_train[:1]))["params"]
  assert record["param_count"] == models.param_count(flax_params)  # same sizes as seqclf's model
  assert record["seed"] == 1 and record["compile_s"] > 0
  assert record["shapes"] == [data.x_train.shape[1]] and record["devices"] == 1
  assert [dataclasses.asdict(metrics) for metrics in seen] == record["epochs"]
  (epoch,) = record["epochs"]
  assert set(epoch) == {field.name for field in dataclasses.fields(train.EpochMetrics)}
  assert epoch["epoch"] == 1 and epoch["epoch_s"] > 0 and epoch["eval_s"] > 0
  assert epoch["examples_per_s"] == pytest.approx(len(data.x_train) / epoch["epoch_s"])
  for key in ("train_acc", "test_acc"):
    assert 0 <= epoch[key] <= 1
  assert np.isfinite(epoch["train_loss"]) and np.isfinite(epoch["test_loss"])


def test_binary_metrics_equal_seqclf_loss_and_metrics():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=16).astype(np.float32) * 30  # large ones exercise the stable form
  labels = rng.integers(0, 2, 16).astype(np.int32)
  weights = np.ones(16, np.float32)
  weights[12:] = 0
  _, expected = train.loss_and_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  np.testing.assert_allclose(
    peers.binary_metrics(logits, labels, weights),
    [expected["loss_sum"], expected["correct"], expected["count"]],
    rtol=1e-5,
  )


def test_missing_framework_is_a_config_error_with_the_install_hint(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now fails as if it were not installed
  monkeypatch.delitem(sys.modules, "seqclf.benchmarks.peers.torch_models", raising=False)
  data, config = tiny_setup()
  with pytest.raises(ConfigError, match=r"needs torch, which is not installed; pip install -e \.\[peers\]"):
    peers.fit_peer("torch", "lstm", data, config, seed=0)


def test_unknown_names_are_config_errors():
  data, config = tiny_setup()
  with pytest.raises(ConfigError, match="unknown peer 'mxnet'; choose from: torch, keras"):
    peers.fit_peer("mxnet", "lstm", data, config, seed=0)
  with pytest.raises(ConfigError, match="unknown variant 'rnn'"):
    peers.fit_peer("torch", "rnn", data, config, seed=0)
  with pytest.raises(ConfigError, match="unknown peer 'tf'"):
    peers.parse_peers("torch, tf")
  assert peers.parse_peers("torch, keras") == ["torch", "keras"] and peers.parse_peers("") == []

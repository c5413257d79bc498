"""The variants: Keras parameter counts, learning, dropout behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import models, train
from seqclf.errors import ConfigError
from seqclf.rnn import LSTM
from tests import jaxprs, synthetic


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


@pytest.mark.parametrize(
  "variant,fields",
  [("lstm", {}), ("cnn_lstm", {}), ("lstm", {"bidirectional": True, "lstm_layers": 2})],
  ids=["lstm", "cnn_lstm", "stacked_bidirectional"],
)
@pytest.mark.parametrize("engine", ["scan", "fused"])
def test_final_state_layers_leave_parameters_logits_and_gradients_as_before(
  monkeypatch, variant, fields, engine
):
  """The last LSTM layer returns its final h only (so fused stores no per-step outputs at evaluation), with
  the parameters, logits and gradients of the model whose layers all return their sequences."""
  model = models.create(variant, vocab_size=40, embed_dim=8, lstm_features=6, engine=engine, **fields)
  tokens = jnp.pad(jnp.arange(1, 15).reshape(2, 7) % 40, ((0, 0), (3, 0)))
  variables = model.init(jax.random.key(0), tokens)
  steps = tokens.shape[1] // (model.pool_size if model.conv_filters else 1)

  def run():
    """Logits, their gradients, and how many of the loops store every step's h [T, B, H]."""
    logits = lambda params: model.apply({"params": params}, tokens, tokens != 0)
    # A new function each time: make_jaxpr would reuse the trace of one it has seen.
    jaxpr = jax.make_jaxpr(lambda params: logits(params))(variables["params"]).jaxpr
    per_step = jaxprs.scan_output_shapes(jaxpr).count((steps, tokens.shape[0], 6))
    return logits(variables["params"]), jax.grad(lambda p: logits(p).sum())(variables["params"]), per_step

  final_logits, final_grads, final_per_step = run()
  monkeypatch.setattr(models, "LSTM", lambda *args, return_sequences, **kwargs: LSTM(*args, **kwargs))
  assert jax.tree.map(jnp.shape, model.init(jax.random.key(0), tokens)) == jax.tree.map(jnp.shape, variables)
  logits, grads, per_step = run()
  # Different XLA loops (no per-step outputs against some), so equal to rounding, not bit for bit.
  np.testing.assert_allclose(final_logits, logits, rtol=1e-6, atol=1e-7)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7), final_grads, grads)
  if engine == "fused":  # the last layer's loops (both directions) have no per-step outputs
    assert per_step - final_per_step == (2 if model.bidirectional else 1)


def test_auto_is_resolved_for_each_variants_own_cell_on_a_gpu():
  """On a GPU, auto gave every variant the LSTM's kernel (mosaic or pallas), which a GRU refuses."""
  from seqclf import lowering

  with lowering.targeting("gpu"):
    engines = models.resolve_engines("auto,fused", ["lstm", "gru", "cnn_gru"])
    assert engines["lstm"][0] in ("mosaic", "pallas") and engines["lstm"][1:] == ["fused"]
    assert engines["gru"] == engines["cnn_gru"] == ["fused"]
    for variant, names in engines.items():
      for engine in names:
        models.check_fields({**models.VARIANTS[variant], "engine": engine}, platform="gpu")
    # The gates' activation too: auto then picks an engine that implements it.
    assert models.resolve_engines("auto", ["gru"], "hard_sigmoid") == {"gru": ["fused"]}
  assert models.resolve_engines("auto", ["gru"], "hard_sigmoid") == {"gru": ["fused"]}  # not cpu_kernel

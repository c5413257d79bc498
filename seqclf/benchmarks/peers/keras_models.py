"""The article's four variants in Keras 3 on the JAX backend, for `seqclf.benchmarks.peers.fit_peer("keras", ...)`.

The article's layers with Keras' own defaults (which are the article's initialisation), built from the
same `seqclf.models.VARIANTS` fields as seqclf's model. Keras 3 has no Embedding dropout any more (Keras
1's drops whole vocabulary rows), so `WordDropoutEmbedding` brings it back; ``LSTM(dropout=...,
recurrent_dropout=...)`` (or ``GRU``, for the ``gru*`` variants) is Keras' own, with one mask per sequence. Each epoch is one ``model.fit`` call,
Keras' ordinary path, on the epoch's batches in seqclf's order.

Keras reads ``KERAS_BACKEND`` once, at its first import: `seqclf.benchmarks.peers.load_peer` sets it to
``jax`` before importing this module, and this module refuses a Keras already running on another backend.
"""

import jax
import keras
import numpy as np

from seqclf import models
from seqclf.errors import ConfigError

if keras.backend.backend() != "jax":
  raise ConfigError(
    f"Keras was imported with the {keras.backend.backend()!r} backend before the keras peer; "
    "set KERAS_BACKEND=jax"
  )


class WordDropoutEmbedding(keras.layers.Layer):
  """An Embedding that, while training, drops whole vocabulary rows (one draw per batch) and scales the
  kept ones by 1/(1-rate): Keras 1's ``Embedding(dropout=rate)``, as `seqclf.models` implements it."""

  def __init__(self, vocab_size: int, embed_dim: int, rate: float, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size, self.embed_dim, self.rate = vocab_size, embed_dim, rate
    self.seed_generator = keras.random.SeedGenerator()

  def build(self, input_shape):
    self.embeddings = self.add_weight(
      shape=(self.vocab_size, self.embed_dim),
      name="embeddings",
      initializer=keras.initializers.RandomUniform(-0.05, 0.05),
    )

  def call(self, tokens, training=False):
    table = self.embeddings
    if training and self.rate > 0:
      keep = keras.random.dropout(keras.ops.ones((self.vocab_size, 1)), self.rate, seed=self.seed_generator)
      table = table * keep
    return keras.ops.take(table, tokens, axis=0)


def create_model(variant: str, config) -> keras.Model:
  return _build(
    config.top_words,
    config.model.embed_dim,
    config.model.lstm_features,
    config.maxlen,
    **models.VARIANTS[variant],
  )


def _build(
  vocab_size: int,
  embed_dim: int,
  lstm_features: int,
  maxlen: int,
  *,
  word_dropout: float = 0.0,
  embedding_dropout: float = 0.0,
  conv_filters: int = 0,
  conv_width: int = 3,
  pool_size: int = 2,
  lstm_input_dropout: float = 0.0,
  lstm_recurrent_dropout: float = 0.0,
  output_dropout: float = 0.0,
  cell: str = "lstm",
) -> keras.Model:
  """Token ids [B, maxlen] -> one logit [B, 1]; the fields are those of `seqclf.models.SequenceClassifier`."""
  tokens = keras.Input((maxlen,), dtype="int32")
  if word_dropout:
    x = WordDropoutEmbedding(vocab_size, embed_dim, word_dropout)(tokens)
  else:
    x = keras.layers.Embedding(vocab_size, embed_dim)(tokens)
  if embedding_dropout:
    x = keras.layers.Dropout(embedding_dropout)(x)
  if conv_filters:
    x = keras.layers.Conv1D(conv_filters, conv_width, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling1D(pool_size)(x)
  recurrent = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]  # GRU: reset_after=True, as seqclf's
  x = recurrent(lstm_features, dropout=lstm_input_dropout, recurrent_dropout=lstm_recurrent_dropout)(x)
  if output_dropout:
    x = keras.layers.Dropout(output_dropout)(x)
  return keras.Model(tokens, keras.layers.Dense(1)(x))


class KerasTrainer:
  """A `seqclf.benchmarks.peers.PeerTrainer` over a compiled Keras model."""

  def __init__(self, model: keras.Model, config):
    self.model = model
    self.batch_size = config.batch_size
    self.param_count = model.count_params()
    model.compile(
      optimizer=keras.optimizers.Adam(
        config.learning_rate, epsilon=config.adam_eps, global_clipnorm=config.get("grad_clip_norm") or None
      ),
      # Mean over the weighted examples, as seqclf's loss (the default divides by the batch size).
      loss=keras.losses.BinaryCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
      # Keras' "loss" log averages batch means; this metric is the exact mean over the examples.
      metrics=[
        keras.metrics.BinaryCrossentropy(from_logits=True, name="bce"),
        keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
      ],
    )

  def warm_up(self, batch: dict, eval_tokens: np.ndarray) -> None:
    """Compiles (and sets up) what ``fit`` and ``predict_on_batch`` run, on one batch.

    All-zero weights give zero gradients, so neither the weights nor Adam's moments change; only Adam's
    step counter moves, and is put back.
    """
    self.train_epoch([batch])
    self.model.optimizer.iterations.assign(0)
    self.predict(eval_tokens)

  def train_epoch(self, batches) -> tuple[float, float]:
    batches = list(batches)
    history = self.model.fit(
      np.concatenate([batch["tokens"] for batch in batches]),
      _targets(np.concatenate([batch["labels"] for batch in batches])),
      sample_weight=np.concatenate([batch["weights"] for batch in batches]),
      batch_size=self.batch_size,
      epochs=1,
      shuffle=False,
      verbose=0,
    ).history
    jax.block_until_ready([variable.value for variable in self.model.trainable_variables])
    return history["bce"][0], history["accuracy"][0]

  def predict(self, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(self.model.predict_on_batch(tokens))[:, 0]


def _targets(labels: np.ndarray) -> np.ndarray:
  return labels.astype(np.float32)[:, None]  # the model's [B, 1] logits


def create_trainer(variant: str, config, *, seed: int) -> KerasTrainer:
  keras.utils.set_random_seed(seed)  # Keras' initialisers and dropout (and Python's and NumPy's RNGs)
  return KerasTrainer(create_model(variant, config), config)

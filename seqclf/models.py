"""The tutorial's four variants as one configurable Flax classifier, registered by name.

Every variant is ``Embedding -> [word dropout] -> [Dropout] -> [Conv1D + MaxPool] -> LSTM -> [Dropout] ->
Dense``, or the same with a GRU (``cell="gru"``: the ``gru*`` variants); a variant is a set of field values (`VARIANTS`), so adding one is one line. The base sizes come
from ``config.model`` (embedding size, LSTM size, engine, ...), the variant adds what makes it that variant.

Initialisation follows Keras so accuracies compare: embedding uniform(-0.05, 0.05), glorot-uniform kernels,
orthogonal recurrent kernel, zero biases with forget-gate bias 1 (in `seqclf.rnn.LSTM`).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf.errors import ConfigError
from seqclf.rnn import GRU, LSTM, Bidirectional, Stacked, engines
from seqclf.rnn.cells import CELLS

VARIANTS = {
  # Embedding(5000, 32) -> LSTM(100) -> Dense(1, sigmoid)
  "lstm": {},
  # Keras 1 Embedding(dropout=0.2), Dropout(0.2), LSTM(100), Dropout(0.2), Dense
  "lstm_dropout": {"word_dropout": 0.2, "embedding_dropout": 0.2, "output_dropout": 0.2},
  # Embedding(dropout=0.2), LSTM(100, dropout_W=0.2, dropout_U=0.2), Dense
  "lstm_recurrent_dropout": {"word_dropout": 0.2, "lstm_input_dropout": 0.2, "lstm_recurrent_dropout": 0.2},
  # Embedding -> Conv1D(32, 3, same, relu) -> MaxPool1D(2) -> LSTM(100) -> Dense
  "cnn_lstm": {"conv_filters": 32, "conv_width": 3, "pool_size": 2},
  # The same four with a GRU(100) (Keras' GRU, reset_after=True) in place of the LSTM.
  "gru": {"cell": "gru"},
  "gru_dropout": {"cell": "gru", "word_dropout": 0.2, "embedding_dropout": 0.2, "output_dropout": 0.2},
  "gru_recurrent_dropout": {
    "cell": "gru",
    "word_dropout": 0.2,
    "lstm_input_dropout": 0.2,
    "lstm_recurrent_dropout": 0.2,
  },
  "cnn_gru": {"cell": "gru", "conv_filters": 32, "conv_width": 3, "pool_size": 2},
}
# What --variants names besides single variants: the article's four, and every variant.
ARTICLE_VARIANTS = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"]
VARIANT_GROUPS = {"article": ARTICLE_VARIANTS, "all": list(VARIANTS)}

# Keras' parameter counts for the article's sizes, checked by the tests.
KERAS_PARAM_COUNTS = {
  "lstm": 213_301,
  "lstm_dropout": 213_301,
  "lstm_recurrent_dropout": 213_301,
  "cnn_lstm": 216_405,
  "gru": 200_301,
  "gru_dropout": 200_301,
  "gru_recurrent_dropout": 200_301,
  "cnn_gru": 203_405,
}


def _keras_embedding_init(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, minval=-0.05, maxval=0.05)


class SequenceClassifier(nn.Module):
  """Token ids [B, T] (0 = padding) -> logits: [B] for 2 classes (sigmoid), [B, C] for more (softmax).

  ``mask`` [B, T] (optional, True on real tokens) makes the LSTM skip padded steps exactly; without it
  padding is read like any token, as in the article (Keras without ``mask_zero``).
  """

  vocab_size: int = 5000
  embed_dim: int = 32
  lstm_features: int = 100  # the recurrent layer's size, LSTM or GRU
  cell: str = "lstm"  # the recurrent layer: "lstm" or "gru" (seqclf.rnn.GRU; its lstm_* fields apply)
  num_classes: int = 2
  engine: str = "auto"
  matmul_precision: str = "float32"  # of the recurrent layer's products, see seqclf.rnn.lstm and gru
  recurrent_activation: str = (
    "sigmoid"  # the gates' (the GRU's z and r); "hard_sigmoid": Keras 1's, the article's
  )
  freeze_embedding: bool = False  # keep (pretrained) embedding vectors as they are
  word_dropout: float = 0.0  # drops whole vocabulary rows per batch (Keras 1 Embedding dropout)
  embedding_dropout: float = 0.0  # elementwise Dropout layer after the embedding
  conv_filters: int = 0  # 0: no convolution front end
  conv_width: int = 3
  pool_size: int = 2
  lstm_input_dropout: float = 0.0
  lstm_recurrent_dropout: float = 0.0
  output_dropout: float = 0.0  # Dropout layer after the LSTM
  lstm_layers: int = 1  # stacked LSTMs; each reads the full output sequence of the last
  bidirectional: bool = False  # a second LSTM per layer reads the reversed sequence

  @nn.compact
  def __call__(self, tokens, mask=None, train: bool = False):
    embedding = self.param("embedding", _keras_embedding_init, (self.vocab_size, self.embed_dim))
    if self.freeze_embedding:  # zero gradient: Adam then leaves the vectors exactly as they are
      embedding = jax.lax.stop_gradient(embedding)
    if train and self.word_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.word_dropout, (self.vocab_size,))
      embedding = embedding * (keep / (1.0 - self.word_dropout))[:, None]
    x = jnp.take(embedding, tokens, axis=0)
    x = nn.Dropout(self.embedding_dropout, deterministic=not train)(x)
    if self.conv_filters:
      if mask is not None:  # padding then looks to the convolution like its own SAME zero padding
        x = jnp.where(mask[..., None], x, 0.0)
      x = nn.relu(nn.Conv(self.conv_filters, (self.conv_width,), padding="SAME", name="conv")(x))
      x = nn.max_pool(x, (self.pool_size,), strides=(self.pool_size,), padding="VALID")
      if mask is not None:
        # A pooled step is real only if its whole window was, as VALID pooling of the unpadded review
        # drops a trailing partial window. Exact for right padding and for left padding by a multiple
        # of pool_size.
        steps = x.shape[1] * self.pool_size
        mask = mask[:, :steps].reshape(mask.shape[0], -1, self.pool_size).all(axis=-1)
    h = self._recurrent_stack(x, mask, train)
    h = nn.Dropout(self.output_dropout, deterministic=not train)(h)
    outputs = 1 if self.num_classes == 2 else self.num_classes
    logits = nn.Dense(outputs, name="head")(h)
    return logits[:, 0] if outputs == 1 else logits

  def _recurrent_stack(self, x, mask, train: bool):
    """Runs the (stacked, optionally bidirectional) LSTMs or GRUs; returns the final hidden state(s) [B, H']."""

    layer_type = {"lstm": LSTM, "gru": GRU}[self.cell]

    def lstm(name, last):
      return layer_type(
        self.lstm_features,
        engine=self.engine,
        input_dropout=self.lstm_input_dropout,
        recurrent_dropout=self.lstm_recurrent_dropout,
        matmul_precision=self.matmul_precision,
        recurrent_activation=self.recurrent_activation,
        # Only the final h is read: the last layer need not store every step's outputs.
        return_sequences=not last,
        # A GRU's parameters are named gru* (run directories of earlier versions load).
        name=name.replace("lstm", self.cell),
      )

    layers = []
    for depth in range(self.lstm_layers):
      # Built here, the layers' parameters sit in this module under these names: the first layer keeps
      # the name "lstm" of the article's parameters, and run directories of earlier versions still load.
      suffix, last = f"_{depth}" if depth else "", depth == self.lstm_layers - 1
      forward = lstm("lstm" + suffix, last)
      layers.append(
        Bidirectional(forward, lstm("lstm_backward" + suffix, last)) if self.bidirectional else forward
      )
    _, state = Stacked(layers)(x, mask=mask, deterministic=not train)
    # The last layer's final h (every cell's state starts with it), both directions' concatenated.
    final_h = lambda state: state[0] if isinstance(state, tuple) else state  # noqa: E731
    return jnp.concatenate([final_h(s) for s in state], axis=-1) if self.bidirectional else final_h(state)


# Fields of `SequenceClassifier` by the values they take; `check_fields` holds a model's fields to them.
_AT_LEAST_ONE = ("vocab_size", "embed_dim", "lstm_features", "lstm_layers", "conv_width", "pool_size")
_RATES = (
  "word_dropout",
  "embedding_dropout",
  "lstm_input_dropout",
  "lstm_recurrent_dropout",
  "output_dropout",
)
_FLAGS = ("freeze_embedding", "bidirectional")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_fields(fields: dict, *, masked: bool = False, platform: str | None = None) -> None:
  """Refuses model fields that cannot build or run a model, one `ConfigError` naming the field.

  ``fields`` are `SequenceClassifier` fields (``config.model``, perhaps with a variant's); each given one
  is checked: sizes are integers >= 1 (``conv_filters`` >= 0, ``num_classes`` >= 2), dropout rates in
  [0, 1), switches booleans, and the engine (each of a comma-separated list) must be known; with a
  ``platform`` (where the model will run) it is held against the dropout, ``matmul_precision`` and, with
  ``masked``, the padding mask it will be asked for there (`seqclf.rnn.engines.check_engine`). So a bad value
  is refused before a driver writes anything, not at the first step. A None value is a config's
  placeholder for the variant's own value (`create` fills it in), so it is checked there, not here.
  """
  fields = {key: value for key, value in fields.items() if value is not None}
  for key in _AT_LEAST_ONE:
    if key in fields and (not _is_int(fields[key]) or fields[key] < 1):
      raise ConfigError(f"--config.model.{key} must be an integer >= 1, got {fields[key]!r}")
  if "conv_filters" in fields and (not _is_int(fields["conv_filters"]) or fields["conv_filters"] < 0):
    raise ConfigError(
      f"--config.model.conv_filters must be an integer >= 0 (0: no convolution), got {fields['conv_filters']!r}"
    )
  if "num_classes" in fields and (not _is_int(fields["num_classes"]) or fields["num_classes"] < 2):
    raise ConfigError(f"a classifier needs at least 2 classes, got num_classes={fields['num_classes']!r}")
  for key in _RATES:
    value = fields.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise ConfigError(f"{key} must be a dropout rate in [0, 1), got {value!r}")
  for key in _FLAGS:
    if key in fields and not isinstance(fields[key], bool):
      raise ConfigError(f"--config.model.{key} must be True or False, got {fields[key]!r}")
  cell = fields.get("cell", "lstm")
  if cell not in CELLS:
    raise ConfigError(f"--config.model.cell must be one of {', '.join(CELLS)}, got {cell!r}")
  cell_engines = engines.engines_of(cell)
  precisions = sorted({"float32", *(p for e in cell_engines.values() for p in e.matmul_precisions)})
  if fields.get("matmul_precision", "float32") not in precisions:
    raise ConfigError(
      f"--config.model.matmul_precision must be one of {', '.join(precisions)} (as the {cell} engines "
      f"offer), got {fields['matmul_precision']!r}"
    )
  engine_spec = fields.get("engine", "auto")
  if not isinstance(engine_spec, str) or not engine_spec.strip():
    raise ConfigError(f"--config.model.engine must be an engine name, got {engine_spec!r}")
  for engine in engine_spec.split(","):
    if platform is None:  # a model may be built here and lowered for another platform
      if engine.strip() not in ("auto", *cell_engines):
        # check_engine names the engines that have this cell, and the cell an LSTM-only engine runs.
        engines.check_engine(engine.strip(), "cpu", cell=cell)
      continue
    name = engines.check_engine(
      engine.strip(),
      platform,
      masks="mask" if masked else None,
      input_dropout=fields.get("lstm_input_dropout", 0.0) > 0,
      recurrent_dropout=fields.get("lstm_recurrent_dropout", 0.0) > 0,
      matmul_precision=fields.get("matmul_precision", "float32"),
      recurrent_activation=fields.get("recurrent_activation", "sigmoid"),
      cell=cell,
    )
    reason = engines.unavailable_reason(name, cell)  # say, cpu_kernel without a compiler or a writable cache
    if reason:
      raise ConfigError(reason)


def resolve_engines(spec: str, variants, recurrent_activation: str = "sigmoid") -> dict[str, list[str]]:
  """The engines that train each variant: the comma-separated names of ``spec``, "auto" resolved for the
  variant's own cell (an LSTM and a GRU may get different engines on one platform), without repeats.

  Args:
    spec: ``--config.model.engine``, say "auto" or "cpu_kernel,flax".
    variants: names in `models.VARIANTS`.
    recurrent_activation: the model's gate activation, which the resolved engine must implement.

  Returns:
    ``{variant: [engine, ...]}``, each name as the table labels its runs.
  """
  by_cell = {}
  for variant in variants:
    cell = VARIANTS[variant].get("cell", "lstm")
    if cell not in by_cell:
      names = (name.strip() for name in spec.split(","))
      resolved = (
        engines.check_engine(name, cell=cell, recurrent_activation=recurrent_activation) for name in names
      )
      by_cell[cell] = list(dict.fromkeys(resolved))
  return {variant: by_cell[VARIANTS[variant].get("cell", "lstm")] for variant in variants}


def unsupported_pairs(
  engines: dict[str, list[str]], model_fields: dict, *, masked: bool, platform: str
) -> list[tuple[str, str, str]]:
  """The (variant, engine) pairs of a sweep that cannot train, each with the reason, found before any
  trains: every pair's model fields (the variant's under ``model_fields``) held against the engine's
  capabilities on ``platform`` (`check_fields`).

  Args:
    engines: ``{variant: [engine, ...]}`` as `resolve_engines` gives it.
    model_fields: the config's model fields; None leaves the variant's own.
    masked: whether training feeds a step mask.
    platform: where the engines run.

  Returns:
    ``[(variant, engine, reason), ...]`` in sweep order; [] when every pair can train.
  """
  given = {key: value for key, value in model_fields.items() if value is not None}
  refused = []
  for variant, names in engines.items():
    for engine in names:
      try:
        check_fields({**VARIANTS[variant], **given, "engine": engine}, masked=masked, platform=platform)
      except ConfigError as error:
        refused.append((variant, engine, str(error)))
  return refused


def create(variant: str, **model_fields) -> SequenceClassifier:
  """The model of ``variant``: its `VARIANTS` fields, with ``model_fields`` on top.

  Args:
    variant: A key of `VARIANTS`.
    **model_fields: `SequenceClassifier` fields (e.g. ``config.model``); one that is None keeps the
      variant's value (the config's dropout placeholders), any other value replaces it.

  Returns:
    The (unbound) Flax module.

  Raises:
    ConfigError: An unknown variant or field, or a field value `check_fields` refuses.
  """
  if variant not in VARIANTS:
    raise ConfigError(f"unknown variant {variant!r}; choose from: {', '.join(VARIANTS)}")
  known = {f.name for f in dataclasses.fields(SequenceClassifier)} - {"parent", "name"}
  unknown = set(model_fields) - known
  if unknown:
    raise ConfigError(
      f"unknown model field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
    )
  given = {name: value for name, value in model_fields.items() if value is not None}
  fields = {**VARIANTS[variant], **given}
  check_fields(fields)
  return SequenceClassifier(**fields)


def check_input_length(model: SequenceClassifier, maxlen: int) -> None:
  """A convolution front end pools ``pool_size`` steps into one: shorter inputs leave the LSTM nothing."""
  needed = model.pool_size if model.conv_filters else 1
  if maxlen < needed:
    raise ConfigError(
      f"--config.maxlen={maxlen} is shorter than the {needed} steps this model's "
      f"max-pooling needs; raise --config.maxlen"
    )


def parse_variants(spec: str) -> list[str]:
  """A group (``"article"``: the article's four LSTM variants, ``"all"``: every variant) or a
  comma-separated list of variant names -> validated list."""
  spec = spec.strip()
  names = (
    VARIANT_GROUPS[spec] if spec in VARIANT_GROUPS else [v.strip() for v in spec.split(",") if v.strip()]
  )
  if not names:
    raise ConfigError("no variant given; pass --variants=article or a list such as lstm,cnn_lstm")
  for name in names:
    if name not in VARIANTS:
      raise ConfigError(
        f"unknown variant {name!r}; choose from: {', '.join(VARIANT_GROUPS)}, {', '.join(VARIANTS)}"
      )
  return list(names)


def param_count(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


# The article's table (Keras 1.1 on a 2016 GPU, 3 epochs): seconds per epoch and test accuracy.
ARTICLE_RESULTS = {
  "lstm": (107.0, 0.8679),
  "lstm_dropout": (108.0, 0.8556),
  "lstm_recurrent_dropout": (112.0, 0.8282),
  "cnn_lstm": (58.0, 0.8636),
}

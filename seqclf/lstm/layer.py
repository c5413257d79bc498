"""The Linen layers over `seqclf.lstm.api.lstm`: `LSTM`, `Bidirectional` and `Stacked`.

    from seqclf.lstm import LSTM, Bidirectional, Stacked
    layer = Stacked([Bidirectional(LSTM(64), LSTM(64)), LSTM(64)])
    variables = layer.init(key, xs)
    outputs, (h, c) = layer.apply(variables, xs, lengths=lengths)

Every layer is called as ``layer(xs, mask=None, lengths=None, deterministic=True) -> (outputs, state)``.
The NNX versions are in `seqclf.lstm.nnx`, with the same parameters.
"""

from collections.abc import Sequence

import flax.linen as nn

from seqclf.lstm import api, sequences


class LSTM(nn.Module):
  """An LSTM layer. ``__call__(xs [B, T, E], mask=None, lengths=None, deterministic=True)``
  ``-> (outputs [B, T, H], (h, c))``, or ``(h, (h, c))`` with ``return_sequences=False``.

  Attributes:
    features: hidden size H.
    engine: LSTM engine name (see `seqclf.lstm.api.ENGINES`) or "auto".
    input_dropout: rate of Keras' ``dropout``: one input mask per sequence, reused at every step.
    recurrent_dropout: rate of Keras' ``recurrent_dropout``: one mask on ``h`` per sequence.
    matmul_precision: of the recurrent matmul, see `seqclf.lstm.api.lstm`.
    recurrent_activation: of the input, forget and output gates, "sigmoid" or "hard_sigmoid" (Keras 1's,
      the article's), see `seqclf.lstm.api.lstm`.
    return_sequences: False returns the final h [B, H] as the outputs (Keras' ``return_sequences``), and
      engines that can then store no per-step outputs; see `seqclf.lstm.api.lstm`. In a `Stacked`, the
      last layer only.

  Dropout needs the ``"dropout"`` RNG when ``deterministic=False``. Parameters are named as in
  `seqclf.lstm.api` (``kernel``, ``recurrent_kernel``, ``bias``), so ``variables["params"]`` of this module
  can be passed to `seqclf.lstm.lstm` directly. An engine that cannot honour the layer's dropout,
  precision or gate activation is refused when the layer is built (initialised or applied), not at the first training step.
  """

  features: int
  engine: str = "auto"
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  matmul_precision: str = "float32"
  recurrent_activation: str = "sigmoid"
  return_sequences: bool = True

  @nn.compact
  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).

    Returns:
      ``(outputs [B, T, H], (h [B, H], c [B, H]))``; the outputs are h with ``return_sequences=False``.
    """
    input_size = xs.shape[-1]
    params = {
      "kernel": self.param("kernel", api.kernel_init, (input_size, 4 * self.features)),
      "recurrent_kernel": self.param(
        "recurrent_kernel", api.recurrent_kernel_init, (self.features, 4 * self.features)
      ),
      "bias": self.param("bias", api.bias_init, (4 * self.features,)),
    }
    return sequences.run_lstm(
      params,
      xs,
      mask=mask,
      lengths=lengths,
      features=self.features,
      input_dropout=self.input_dropout,
      recurrent_dropout=self.recurrent_dropout,
      engine=self.engine,
      matmul_precision=self.matmul_precision,
      recurrent_activation=self.recurrent_activation,
      return_sequences=self.return_sequences,
      next_key=None if deterministic else lambda: self.make_rng("dropout"),
    )


class Bidirectional(nn.Module):
  """``forward`` over the sequence and ``backward`` over it reversed (see `sequences.bidirectional`):
  ``-> (outputs [B, T, H_f + H_b], (forward_state, backward_state))``; outputs [B, H_f + H_b], the final
  h's, when both layers have ``return_sequences=False``.

  The two layers hold the parameters; this module has none. Built inside another module's compact
  method, the layers belong to that module (their parameters sit beside it under their own names).
  """

  forward: nn.Module
  backward: nn.Module

  @property
  def return_sequences(self) -> bool:
    """Whether it returns every step's outputs: as its layers do (they must agree)."""
    return sequences.returns_sequences(self.forward)

  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).

    Returns:
      ``(outputs [B, T, H_f + H_b], (forward_state, backward_state))``; the outputs are the two final h's,
      [B, H_f + H_b], when both layers have ``return_sequences=False``.
    """
    return sequences.bidirectional(
      self.forward, self.backward, xs, mask=mask, lengths=lengths, deterministic=deterministic
    )


class Stacked(nn.Module):
  """``layers`` one after another, each reading the full output sequence of the one before (so only the
  last may have ``return_sequences=False``): ``-> (outputs of the last, state of the last)``."""

  layers: Sequence[nn.Module]

  @property
  def return_sequences(self) -> bool:
    """Whether it returns every step's outputs: as its last layer does."""
    return sequences.returns_sequences(self.layers[-1])

  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).

    Returns:
      ``(outputs [B, T, H of the last layer], the last layer's state)``; [B, H] when the last layer has
      ``return_sequences=False``.
    """
    return sequences.stacked(self.layers, xs, mask=mask, lengths=lengths, deterministic=deterministic)


class GRU(nn.Module):
  """A GRU layer (`seqclf.lstm.gru_api`): ``__call__(xs [B, T, E], mask=None, lengths=None,
  deterministic=True) -> (outputs [B, T, H], h)``; usable inside `Bidirectional` and `Stacked`.

  Attributes:
    features: hidden size H.
    engine: GRU engine name (see `seqclf.lstm.api.GRU_ENGINES`) or "auto".
    input_dropout: rate of Keras' ``dropout``: one input mask per sequence, reused at every step.
    recurrent_dropout: rate of Keras' ``recurrent_dropout``: one mask on ``h`` per sequence.
    matmul_precision: of the step's products, see `seqclf.lstm.gru_api.gru`.
    recurrent_activation: of the update and reset gates, "sigmoid" or "hard_sigmoid", see
      `seqclf.lstm.gru_api.gru`.

  Parameters ``kernel`` [E, 3H], ``recurrent_kernel`` [H, 3H], ``bias`` [2, 3H] with Keras' initialisation,
  so ``variables["params"]`` is the ``params`` of `seqclf.lstm.gru`.
  """

  features: int
  engine: str = "auto"
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  matmul_precision: str = "float32"
  recurrent_activation: str = "sigmoid"

  @nn.compact
  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True):
    input_size, gates = xs.shape[-1], 3 * self.features
    params = {
      "kernel": self.param("kernel", api.kernel_init, (input_size, gates)),
      "recurrent_kernel": self.param("recurrent_kernel", api.recurrent_kernel_init, (self.features, gates)),
      "bias": self.param("bias", nn.initializers.zeros_init(), (2, gates)),
    }
    return sequences.run_gru(
      params,
      xs,
      mask=mask,
      lengths=lengths,
      features=self.features,
      input_dropout=self.input_dropout,
      recurrent_dropout=self.recurrent_dropout,
      engine=self.engine,
      matmul_precision=self.matmul_precision,
      recurrent_activation=self.recurrent_activation,
      next_key=None if deterministic else lambda: self.make_rng("dropout"),
    )

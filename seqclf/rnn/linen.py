"""The Linen layers over `seqclf.rnn.rnn`: `Recurrent` (one layer of any cell), `LSTM` and `GRU`, and the
generic `Bidirectional` and `Stacked`.

    from seqclf.rnn import LSTM, GRU, Bidirectional, Stacked
    layer = Stacked([Bidirectional(LSTM(64), LSTM(64)), GRU(64)])
    variables = layer.init(key, xs)
    outputs, h = layer.apply(variables, xs, lengths=lengths)

Every layer is called as ``layer(xs, mask=None, lengths=None, deterministic=True, initial_state=None) ->
(outputs, state)``. The NNX versions are in `seqclf.rnn.nnx`, with the same parameters.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from seqclf.rnn import sequences
from seqclf.rnn.cells import GRU_CELL, LSTM_CELL, Cell, check_sizes
from seqclf.rnn.validation import as_array


class Recurrent(nn.Module):
  """A recurrent layer of the class's ``cell`` (`seqclf.rnn.cells.Cell`): ``__call__(xs [B, T, E], ...)
  -> (outputs [B, T, H], state)``, or ``(h, state)`` with ``return_sequences=False``. A subclass sets
  ``cell`` (`LSTM`, `GRU`, or a cell of your own, which runs on engine ``scan``).

  Attributes:
    features: hidden size H.
    engine: an engine of the cell (`seqclf.rnn.engines.engines_of`) or "auto".
    input_dropout: rate of Keras' ``dropout``, in [0, 1): one input mask per sequence, reused at every step.
    recurrent_dropout: rate of Keras' ``recurrent_dropout``, in [0, 1): one mask on ``h`` per sequence.
    matmul_precision: of the recurrent products, see `seqclf.rnn.rnn`.
    recurrent_activation: of the gates, "sigmoid" or "hard_sigmoid" (Keras 1's, the article's).
    return_sequences: False returns the final h [B, H] as the outputs (Keras' ``return_sequences``), and
      engines that can then store no per-step outputs. In a `Stacked`, the last layer only.
    dtype: the dtype of the computation (flax's rule: None infers it from the inputs and parameters, so
      bfloat16 inputs with float32 parameters compute in float32); see `seqclf.rnn.rnn`.
    param_dtype: of the parameters, float32 by default whatever ``jax_enable_x64`` says.

  Dropout needs the ``"dropout"`` RNG when ``deterministic=False``. Parameters are named as in
  `seqclf.rnn.cells` (``kernel``, ``recurrent_kernel``, ``bias``, Keras' initialisation), so
  ``variables["params"]`` of this module can be passed to `seqclf.rnn.rnn` directly. An engine that cannot
  honour the layer's dropout, precision or gate activation, and a dropout rate outside [0, 1), are refused
  when the layer is built (initialised or applied), not at the first training step.
  """

  cell: ClassVar[Cell]

  features: int
  engine: str = "auto"
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0
  matmul_precision: str = "float32"
  recurrent_activation: str = "sigmoid"
  return_sequences: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True, initial_state=None):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).
      initial_state: optional, as `seqclf.rnn.rnn` takes it for the cell (``(h0, c0)`` for the LSTM,
        ``h0`` for the GRU); zeros by default.

    Returns:
      ``(outputs [B, T, H], state)``; the outputs are the final h [B, H] with ``return_sequences=False``.
    """
    xs = as_array(self.cell, "xs", xs)
    check_sizes(self.cell, xs.shape[-1], self.features, names=("xs.shape[-1]", "features"))
    shapes, inits = self.cell.param_shapes(xs.shape[-1], self.features), self.cell.initializers()
    params = {name: self.param(name, inits[name], shape, self.param_dtype) for name, shape in shapes.items()}
    next_key = None if deterministic else lambda: self.make_rng("dropout")
    return sequences.run_layer(
      self, params, xs, mask=mask, lengths=lengths, initial_state=initial_state, next_key=next_key
    )


class LSTM(Recurrent):
  """An LSTM layer (`Recurrent` of `seqclf.rnn.cells.LSTM_CELL`): ``-> (outputs [B, T, H], (h, c))``."""

  cell = LSTM_CELL


class GRU(Recurrent):
  """A GRU layer (`Recurrent` of `seqclf.rnn.cells.GRU_CELL`, Keras' ``reset_after=True``):
  ``-> (outputs [B, T, H], h)``."""

  cell = GRU_CELL


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

  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True, initial_state=None):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).
      initial_state: optional pair (forward's, backward's), each as its layer takes it.

    Returns:
      ``(outputs [B, T, H_f + H_b], (forward_state, backward_state))``; the outputs are the two final h's,
      [B, H_f + H_b], when both layers have ``return_sequences=False``.
    """
    return sequences.bidirectional(
      self.forward,
      self.backward,
      xs,
      mask=mask,
      lengths=lengths,
      initial_state=initial_state,
      deterministic=deterministic,
    )


class Stacked(nn.Module):
  """``layers`` one after another, each reading the full output sequence of the one before (so only the
  last may have ``return_sequences=False``): ``-> (outputs of the last, state of the last)``."""

  layers: Sequence[nn.Module]

  @property
  def return_sequences(self) -> bool:
    """Whether it returns every step's outputs: as its last layer does."""
    return sequences.returns_sequences(self.layers[-1])

  def __call__(self, xs, mask=None, lengths=None, deterministic: bool = True, initial_state=None):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding (what every engine, `cudnn` included, takes).
      deterministic: False applies dropout (needs the ``"dropout"`` RNG).
      initial_state: optional, one per layer (each as its layer takes it; None: zeros).

    Returns:
      ``(outputs [B, T, H of the last layer], the last layer's state)``; [B, H] when the last layer has
      ``return_sequences=False``.
    """
    return sequences.stacked(
      self.layers, xs, mask=mask, lengths=lengths, initial_state=initial_state, deterministic=deterministic
    )

"""The NNX layers over `seqclf.rnn.rnn`: `Recurrent` (one layer of any cell), `LSTM`, `GRU`,
`Bidirectional` and `Stacked` as `flax.nnx.Module`s.

    from flax import nnx
    from seqclf.rnn import nnx as rnn_nnx
    rngs = nnx.Rngs(params=0, dropout=1)
    layer = rnn_nnx.Stacked([rnn_nnx.Bidirectional(rnn_nnx.LSTM(32, 64, rngs=rngs),
                                                   rnn_nnx.LSTM(32, 64, rngs=rngs)),
                             rnn_nnx.GRU(128, 64, rngs=rngs)])
    outputs, h = layer(xs, lengths=lengths)

They are the Linen layers of `seqclf.rnn.linen` in NNX form: the same parameter names and Keras
initialisation, every engine, masks or lengths, the same dtype policy, and Keras' per-sequence dropout
drawn from the ``"dropout"`` RNG stream (``model.eval()`` / ``model.train()`` switch it, as for
``nnx.Dropout``). `to_linen` and `from_linen` convert parameters between a layer here and its Linen twin.
"""

from collections.abc import Sequence
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from seqclf.rnn import sequences
from seqclf.rnn.cells import GRU_CELL, LSTM_CELL, Cell, check_sizes, init_cell_params


class Recurrent(nnx.Module):
  """A recurrent layer of the class's ``cell``: ``__call__(xs [B, T, E], mask=None, lengths=None) ->
  (outputs [B, T, H], state)``, or ``(h, state)`` with ``return_sequences=False``; a subclass sets
  ``cell`` (`LSTM`, `GRU`, or a `seqclf.rnn.cells.Cell` of your own, which runs on engine ``scan``).

  Args:
    in_features: input size E.
    features: hidden size H.
    engine: an engine of the cell (`seqclf.rnn.engines.engines_of`) or "auto".
    input_dropout: rate of Keras' ``dropout``, in [0, 1): one input mask per sequence.
    recurrent_dropout: rate of Keras' ``recurrent_dropout``, in [0, 1): one mask on ``h`` per sequence.
    matmul_precision: of the recurrent products, see `seqclf.rnn.rnn`.
    recurrent_activation: of the gates, "sigmoid" or "hard_sigmoid" (Keras 1's, the article's).
    return_sequences: False returns the final h [B, H] as the outputs (Keras' ``return_sequences``). In a
      `Stacked`, the last layer only.
    dtype: the dtype of the computation; None infers it from the inputs and parameters (flax's rule).
    param_dtype: of the parameters, float32 by default whatever ``jax_enable_x64`` says.
    deterministic: no dropout (``model.eval()`` sets it, ``model.train()`` clears it).
    rngs: ``params`` initialises the weights; ``dropout`` (forked here) draws the dropout masks.

  The parameters ``kernel``, ``recurrent_kernel`` and ``bias`` are those of `seqclf.rnn.rnn`.
  """

  cell: ClassVar[Cell]

  def __init__(
    self,
    in_features: int,
    features: int,
    *,
    engine: str = "auto",
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    matmul_precision: str = "float32",
    recurrent_activation: str = "sigmoid",
    return_sequences: bool = True,
    dtype=None,
    param_dtype=jnp.float32,
    deterministic: bool = False,
    rngs: nnx.Rngs,
  ):
    sequences.check_rate("input_dropout", input_dropout)
    sequences.check_rate("recurrent_dropout", recurrent_dropout)
    check_sizes(self.cell, in_features, features, names=("in_features", "features"))
    params = init_cell_params(self.cell, rngs.params(), in_features, features, param_dtype)
    self.kernel = nnx.Param(params["kernel"])
    self.recurrent_kernel = nnx.Param(params["recurrent_kernel"])
    self.bias = nnx.Param(params["bias"])
    self.engine = engine
    self.input_dropout = input_dropout
    self.recurrent_dropout = recurrent_dropout
    self.matmul_precision = matmul_precision
    self.recurrent_activation = recurrent_activation
    self.return_sequences = return_sequences
    self.dtype = dtype
    self.deterministic = deterministic
    self.rngs = rngs.dropout.fork() if input_dropout > 0 or recurrent_dropout > 0 else nnx.data(None)

  def __call__(
    self, xs, mask=None, lengths=None, *, initial_state=None, deterministic: bool | None = None, rngs=None
  ):
    """Runs the layer over ``xs``.

    Args:
      xs: [B, T, E] inputs.
      mask: optional [B, T] bool, True on real steps (any padding side); padded steps keep the state.
      lengths: optional [B] integers, right padding.
      initial_state: optional, as `seqclf.rnn.rnn` takes it for the cell; zeros by default.
      deterministic: overrides the layer's own for this call (True: no dropout).
      rngs: an ``nnx.Rngs`` or stream overriding the layer's dropout stream for this call.

    Returns:
      ``(outputs [B, T, H], state)``; the outputs are the final h [B, H] with ``return_sequences=False``.
    """
    deterministic = self.deterministic if deterministic is None else deterministic
    stream = rngs.dropout if isinstance(rngs, nnx.Rngs) else rngs or self.rngs
    params = {
      "kernel": self.kernel[...],
      "recurrent_kernel": self.recurrent_kernel[...],
      "bias": self.bias[...],
    }
    next_key = None if deterministic else stream
    return sequences.run_layer(
      self, params, xs, mask=mask, lengths=lengths, initial_state=initial_state, next_key=next_key
    )


class LSTM(Recurrent):
  """An LSTM layer (`Recurrent` of `seqclf.rnn.cells.LSTM_CELL`): ``-> (outputs [B, T, H], (h, c))``."""

  cell = LSTM_CELL


class GRU(Recurrent):
  """A GRU layer (`Recurrent` of `seqclf.rnn.cells.GRU_CELL`): ``-> (outputs [B, T, H], h)``."""

  cell = GRU_CELL


class Bidirectional(nnx.Module):
  """``forward`` over the sequence and ``backward`` over it reversed (see `sequences.bidirectional`):
  ``-> (outputs [B, T, H_f + H_b], (forward_state, backward_state))``; outputs [B, H_f + H_b], the final
  h's, when both layers have ``return_sequences=False``."""

  def __init__(self, forward: nnx.Module, backward: nnx.Module):
    self.forward = forward
    self.backward = backward

  @property
  def return_sequences(self) -> bool:
    """Whether it returns every step's outputs: as its layers do (they must agree)."""
    return sequences.returns_sequences(self.forward)

  def __call__(self, xs, mask=None, lengths=None, **kwargs):
    """Args: as `Recurrent.__call__` (``kwargs`` reach both layers; ``initial_state``: the pair). Returns: ``(outputs [B, T, H_f + H_b],
    (forward_state, backward_state))``; the outputs are the two final h's, [B, H_f + H_b], when both
    layers have ``return_sequences=False``."""
    return sequences.bidirectional(self.forward, self.backward, xs, mask=mask, lengths=lengths, **kwargs)


class Stacked(nnx.Module):
  """``layers`` one after another, each reading the full output sequence of the one before (so only the
  last may have ``return_sequences=False``): ``-> (outputs of the last, state of the last)``."""

  def __init__(self, layers: Sequence[nnx.Module]):
    self.layers = nnx.List(layers)

  @property
  def return_sequences(self) -> bool:
    """Whether it returns every step's outputs: as its last layer does."""
    return sequences.returns_sequences(self.layers[-1])

  def __call__(self, xs, mask=None, lengths=None, **kwargs):
    """Args: as `Recurrent.__call__` (``kwargs`` reach every layer; ``initial_state``: one per layer). Returns: ``(outputs of the last layer,
    state of the last layer)``: [B, T, H], or [B, H] when the last layer has ``return_sequences=False``."""
    return sequences.stacked(self.layers, xs, mask=mask, lengths=lengths, **kwargs)


def _is_list(value) -> bool:
  """Whether ``value`` is an ``nnx.List``'s items in a pure dict: ``{0: ..., 1: ...}``."""
  return isinstance(value, dict) and bool(value) and all(isinstance(index, int) for index in value)


def _linen_keys(tree):
  """(Linen key, NNX key, item) of a pure-dict level: list items ``{"layers": {0: x}}`` are ``layers_0``."""
  for key, value in tree.items():
    if _is_list(value):
      for index, item in value.items():
        yield f"{key}_{index}", (key, index), item
    else:
      yield key, (key,), value


def _to_linen(tree):
  return {name: _to_linen(v) if isinstance(v, dict) else v for name, _, v in _linen_keys(tree)}


def _from_linen(template, params, where=""):
  """``params`` (Linen's nesting) rearranged as ``template`` (NNX's pure dict), names and shapes checked."""
  given = set(params) if isinstance(params, dict) else set()
  expected = {name for name, _, _ in _linen_keys(template)}
  if given != expected:
    raise ValueError(
      f"Linen parameters {where or '/'} hold {sorted(given)}, but this module has {sorted(expected)}"
    )
  tree = {}
  for name, nnx_key, value in _linen_keys(template):
    path = f"{where}/{name}" if where else name
    if isinstance(value, dict):
      loaded = _from_linen(value, params[name], path)
    elif params[name].shape != value.shape:
      raise ValueError(f"Linen parameter {path} has shape {params[name].shape}, this module's {value.shape}")
    else:
      loaded = params[name]
    if len(nnx_key) == 2:
      tree.setdefault(nnx_key[0], {})[nnx_key[1]] = loaded
    else:
      tree[name] = loaded
  return tree


def to_linen(module: nnx.Module) -> dict:
  """``module``'s parameters as its Linen twin's ``variables["params"]`` (`seqclf.rnn.linen`).

  For a single `Recurrent` layer that is also the ``params`` of `seqclf.rnn.rnn`.

  Args:
    module: a `Recurrent` layer (`LSTM`, `GRU`), or a `Bidirectional` or `Stacked` of them.

  Returns:
    A nested dict of arrays, named as the Linen layers name them.
  """
  return _to_linen(nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def from_linen(module: nnx.Module, params) -> nnx.Module:
  """Loads the Linen twin's parameters into ``module``, in place.

  Args:
    module: a `Recurrent` layer (`LSTM`, `GRU`), or a `Bidirectional` or `Stacked` of them.
    params: the Linen twin's ``variables["params"]`` (or, for one layer, `seqclf.rnn.rnn`'s ``params``).

  Returns:
    ``module``.

  Raises:
    ValueError: a parameter of another name or shape, named.
  """
  state = nnx.state(module, nnx.Param)
  nnx.replace_by_pure_dict(state, _from_linen(nnx.to_pure_dict(state), dict(params)))
  nnx.update(module, state)
  return module

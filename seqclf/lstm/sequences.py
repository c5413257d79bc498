"""How LSTM layers compose, shared by the Linen (`layer.py`) and NNX (`nnx.py`) layers.

A layer here is anything called as ``layer(xs, mask=None, lengths=None, **kwargs) -> (outputs, state)``,
its outputs [B, T, H], or the final h [B, H] where it has ``return_sequences=False`` (`returns_sequences`):
`bidirectional` runs one layer over the sequence and another over it reversed, `stacked` runs layers one
after another, and `run_lstm` is what both LSTM layers do with their parameters (hold the engine to the
layer's options, draw the per-sequence masks of Keras' ``dropout`` and ``recurrent_dropout`` with
`dropout_mask`, call `seqclf.lstm.api.lstm`).
"""

import jax
import jax.numpy as jnp

from seqclf.errors import ConfigError
from seqclf.lstm import api, gru_api, validation


def dropout_mask(key, rate: float, shape, dtype):
  """A [B, X] mask, 0 or 1/(1 - rate): one draw per sequence, reused at every step."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(dtype) / (1.0 - rate)


def _sequence_dropout_masks(xs, features: int, input_dropout: float, recurrent_dropout: float, next_key):
  """The per-sequence input [B, E] and recurrent [B, H] dropout masks of one layer call (input first, each
  None when its rate is 0 or no ``next_key`` is given), as both cells' engines take them."""
  batch, _, input_size = xs.shape
  input_mask = recurrent_mask = None
  if next_key is not None and input_dropout > 0:
    input_mask = dropout_mask(next_key(), input_dropout, (batch, input_size), xs.dtype)
  if next_key is not None and recurrent_dropout > 0:
    recurrent_mask = dropout_mask(next_key(), recurrent_dropout, (batch, features), xs.dtype)
  return input_mask, recurrent_mask


def run_lstm(
  params,
  xs,
  *,
  mask,
  lengths,
  features: int,
  input_dropout: float,
  recurrent_dropout: float,
  engine: str,
  matmul_precision: str,
  recurrent_activation: str = "sigmoid",
  return_sequences: bool = True,
  next_key=None,
):
  """One LSTM layer's call: the engine checked against the layer's dropout, precision and gate activation, then
  `seqclf.lstm.api.lstm` (with ``return_sequences``) with dropout masks drawn from ``next_key()`` (a key
  per mask, input mask first), or none when ``next_key`` is None (deterministic)."""
  validation.check_inputs(params, xs, gates=4, mask=mask, lengths=lengths)
  api.check_engine(
    engine,
    input_dropout=input_dropout > 0,
    recurrent_dropout=recurrent_dropout > 0,
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )
  input_mask, recurrent_mask = _sequence_dropout_masks(
    xs, features, input_dropout, recurrent_dropout, next_key
  )
  return api.lstm(
    params,
    xs,
    mask=mask,
    lengths=lengths,
    input_dropout_mask=input_mask,
    recurrent_dropout_mask=recurrent_mask,
    engine=engine,
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
    return_sequences=return_sequences,
  )


def returns_sequences(layer) -> bool:
  """Whether ``layer`` returns every step's outputs: not an LSTM with ``return_sequences=False``, nor a
  bidirectional pair or a stack ending in them (their property says so); a layer without the attribute
  does."""
  return getattr(layer, "return_sequences", True)


def reverse(xs, lengths=None):
  """[B, T, ...] reversed in time; with ``lengths`` [B], each row's first ``length`` steps only.

  Reversing within the lengths keeps right padding on the right, so the reversed batch is right-padded
  too and runs on an engine that takes ``lengths`` only (``cudnn``). Applied twice it is the identity.
  """
  steps = xs.shape[1]
  if lengths is None:
    return xs[:, ::-1]
  time = jnp.arange(steps)[None, :]
  lengths = jnp.asarray(lengths)[:, None]
  index = jnp.where(time < lengths, lengths - 1 - time, time)
  return jnp.take_along_axis(xs, index.reshape(*index.shape, *(1,) * (xs.ndim - 2)), axis=1)


def bidirectional(forward, backward, xs, mask=None, lengths=None, **kwargs):
  """``forward`` over ``xs``, ``backward`` over it reversed -> ([B, T, H_f + H_b], (state_f, state_b)).

  The backward outputs are reversed back, so step t of both halves belongs to input step t. With
  ``lengths`` each row is reversed within its length (right padding stays right padding); with a
  ``mask`` the steps and the mask are reversed together, which is exact for any padding side because a
  masked step leaves the state alone wherever it sits. Both give the same final states, and the same
  outputs at the unmasked steps. Two layers with ``return_sequences=False`` give their final h's
  concatenated, [B, H_f + H_b].
  """
  sequences = returns_sequences(forward)
  if sequences != returns_sequences(backward):
    raise ConfigError(
      f"a bidirectional layer's forward has return_sequences={sequences}, its backward the opposite; "
      "give both the same return_sequences"
    )
  outputs, state = forward(xs, mask=mask, lengths=lengths, **kwargs)
  if lengths is not None:
    back_outputs, back_state = backward(reverse(xs, lengths), lengths=lengths, **kwargs)
    back_outputs = reverse(back_outputs, lengths) if sequences else back_outputs
  else:
    back_mask = None if mask is None else mask[:, ::-1]
    back_outputs, back_state = backward(xs[:, ::-1], mask=back_mask, **kwargs)
    back_outputs = back_outputs[:, ::-1] if sequences else back_outputs
  return jnp.concatenate([outputs, back_outputs], axis=-1), (state, back_state)


def stacked(layers, xs, mask=None, lengths=None, **kwargs):
  """Each layer reads the full output sequence of the one before -> (last outputs, last layer's state).

  Only the last layer may have ``return_sequences=False``: the next one needs a sequence to read.
  """
  for depth, layer in enumerate(list(layers)[:-1]):
    if not returns_sequences(layer):
      raise ConfigError(
        f"layer {depth} of a stack has return_sequences=False, but layer {depth + 1} reads its output "
        "sequence; set return_sequences=False on the last layer only"
      )
  state = None
  for layer in layers:
    xs, state = layer(xs, mask=mask, lengths=lengths, **kwargs)
  return xs, state


def final_hidden(state):
  """The final ``h`` of an `LSTM`'s ``(h, c)``, or the concatenated ones of a bidirectional state."""
  (first, second) = state
  if isinstance(first, tuple):
    return jnp.concatenate([first[0], second[0]], axis=-1)
  return first


def run_gru(
  params,
  xs,
  *,
  mask,
  lengths,
  features: int,
  input_dropout: float,
  recurrent_dropout: float,
  engine: str,
  matmul_precision: str = "float32",
  recurrent_activation: str = "sigmoid",
  next_key=None,
):
  """One GRU layer's call, as `run_lstm`: the engine checked against the layer's dropout, then
  `seqclf.lstm.gru_api.gru` with per-sequence dropout masks drawn from ``next_key()`` (input mask first)."""
  api.check_engine(
    engine,
    input_dropout=input_dropout > 0,
    recurrent_dropout=recurrent_dropout > 0,
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
    cell="gru",
  )
  input_mask, recurrent_mask = _sequence_dropout_masks(
    xs, features, input_dropout, recurrent_dropout, next_key
  )
  return gru_api.gru(
    params,
    xs,
    mask=mask,
    lengths=lengths,
    input_dropout_mask=input_mask,
    recurrent_dropout_mask=recurrent_mask,
    engine=engine,
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )

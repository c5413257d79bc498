"""How recurrent layers run and compose, shared by the Linen (`linen.py`) and NNX (`nnx.py`) layers.

A layer here is anything called as ``layer(xs, mask=None, lengths=None, **kwargs) -> (outputs, state)``,
its outputs [B, T, H], or the final h [B, H] where it has ``return_sequences=False`` (`returns_sequences`):
`bidirectional` runs one layer over the sequence and another over it reversed, `stacked` runs layers one
after another, and `run_layer` is what every layer of every cell does with its parameters (hold the
engine to the layer's options, draw the per-sequence masks of Keras' ``dropout`` and
``recurrent_dropout`` with `dropout_mask`, call `seqclf.rnn.rnn`).
"""

import jax
import jax.numpy as jnp

from seqclf.errors import ConfigError
from seqclf.rnn import api, engines, validation


def dropout_mask(key, rate: float, shape, dtype):
  """A [B, X] mask, 0 or 1/(1 - rate): one draw per sequence, reused at every step."""
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  return keep.astype(dtype) / (1.0 - rate)


def check_rate(name: str, rate) -> None:
  """Refuses a dropout rate outside [0, 1) (1.0 would scale the kept inputs by 1/0: NaN), one line."""
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
    raise ConfigError(f"{name} must be a dropout rate in [0, 1), got {rate!r}")


def run_layer(layer, params, xs, *, mask, lengths, initial_state, next_key=None):
  """One layer's call, shared by the Linen and NNX layers of every cell.

  The dropout rates and the engine are checked against the layer's options (so a layer an engine cannot
  run is refused when it is built, not at the first training step), the per-sequence dropout masks of
  Keras' ``dropout`` and ``recurrent_dropout`` drawn from ``next_key()`` (a key per mask, input mask
  first; none when ``next_key`` is None: deterministic), then `seqclf.rnn.rnn` runs.

  Args:
    layer: a Linen or NNX ``Recurrent``: its ``cell``, ``engine``, ``input_dropout``,
      ``recurrent_dropout``, ``matmul_precision``, ``recurrent_activation``, ``return_sequences`` and
      ``dtype`` are read.
    params: its parameters.
    xs, mask, lengths, initial_state: as `seqclf.rnn.rnn` takes them.
    next_key: a function returning a fresh key, or None.

  Returns:
    `seqclf.rnn.rnn`'s ``(outputs, state)``.
  """
  cell, engine = layer.cell, layer.engine
  input_dropout, recurrent_dropout = layer.input_dropout, layer.recurrent_dropout
  check_rate("input_dropout", input_dropout)
  check_rate("recurrent_dropout", recurrent_dropout)
  batch, _, input_size, hidden = validation.check_inputs(params, xs, cell=cell, mask=mask, lengths=lengths)
  engines.check_engine(
    engine,
    cell=cell,
    input_dropout=input_dropout > 0,
    recurrent_dropout=recurrent_dropout > 0,
    matmul_precision=layer.matmul_precision,
    recurrent_activation=layer.recurrent_activation,
  )
  masks = {}
  if next_key is not None and input_dropout > 0:
    masks["input_dropout_mask"] = dropout_mask(next_key(), input_dropout, (batch, input_size), xs.dtype)
  if next_key is not None and recurrent_dropout > 0:
    masks["recurrent_dropout_mask"] = dropout_mask(next_key(), recurrent_dropout, (batch, hidden), xs.dtype)
  return api.rnn(
    cell,
    params,
    xs,
    initial_state=initial_state,
    mask=mask,
    lengths=lengths,
    engine=engine,
    matmul_precision=layer.matmul_precision,
    recurrent_activation=layer.recurrent_activation,
    return_sequences=layer.return_sequences,
    dtype=layer.dtype,
    **masks,
  )


def returns_sequences(layer) -> bool:
  """Whether ``layer`` returns every step's outputs: not a layer with ``return_sequences=False``, nor a
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


def bidirectional(forward, backward, xs, mask=None, lengths=None, initial_state=None, **kwargs):
  """``forward`` over ``xs``, ``backward`` over it reversed -> ([B, T, H_f + H_b], (state_f, state_b)).

  The backward outputs are reversed back, so step t of both halves belongs to input step t. With
  ``lengths`` each row is reversed within its length (right padding stays right padding); with a
  ``mask`` the steps and the mask are reversed together, which is exact for any padding side because a
  masked step leaves the state alone wherever it sits. Both give the same final states, and the same
  outputs at the unmasked steps. Two layers with ``return_sequences=False`` give their final h's
  concatenated, [B, H_f + H_b]. ``initial_state``: None, or the pair (forward's, backward's), each as
  its layer takes it (None: zeros).
  """
  sequences = returns_sequences(forward)
  if sequences != returns_sequences(backward):
    raise ConfigError(
      f"a bidirectional layer's forward has return_sequences={sequences}, its backward the opposite; "
      "give both the same return_sequences"
    )
  forward_kwargs, backward_kwargs = (
    kwargs if state is None else {**kwargs, "initial_state": state}
    for state in (initial_state if initial_state is not None else (None, None))
  )
  outputs, state = forward(xs, mask=mask, lengths=lengths, **forward_kwargs)
  if lengths is not None:
    back_outputs, back_state = backward(reverse(xs, lengths), lengths=lengths, **backward_kwargs)
    back_outputs = reverse(back_outputs, lengths) if sequences else back_outputs
  else:
    back_mask = None if mask is None else mask[:, ::-1]
    back_outputs, back_state = backward(xs[:, ::-1], mask=back_mask, **backward_kwargs)
    back_outputs = back_outputs[:, ::-1] if sequences else back_outputs
  return jnp.concatenate([outputs, back_outputs], axis=-1), (state, back_state)


def stacked(layers, xs, mask=None, lengths=None, initial_state=None, **kwargs):
  """Each layer reads the full output sequence of the one before -> (last outputs, last layer's state).

  Only the last layer may have ``return_sequences=False``: the next one needs a sequence to read.
  ``initial_state``: None, or one per layer (each as its layer takes it, None: zeros).
  """
  layers = list(layers)
  states = [None] * len(layers) if initial_state is None else list(initial_state)
  if len(states) != len(layers):
    raise ConfigError(
      f"a stack of {len(layers)} layers got {len(states)} initial states; pass one per layer (None: zeros)"
    )
  for depth, layer in enumerate(layers[:-1]):
    if not returns_sequences(layer):
      raise ConfigError(
        f"layer {depth} of a stack has return_sequences=False, but layer {depth + 1} reads its output "
        "sequence; set return_sequences=False on the last layer only"
      )
  state = None
  for layer, initial in zip(layers, states):
    extra = {} if initial is None else {"initial_state": initial}
    xs, state = layer(xs, mask=mask, lengths=lengths, **kwargs, **extra)
  return xs, state

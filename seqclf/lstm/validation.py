"""Input checks shared by the recurrent layers' pure functions (`seqclf.lstm.gru_api.gru`; written so that
`seqclf.lstm.api.lstm` can call the same): one `ConfigError` line naming the argument, its shape and the
shape it must have, before any engine runs, instead of a broadcast error deep in an engine or, worse, a
kernel reading past a buffer.

Shapes are static under `jax.jit`, so they are always checked; ``lengths`` values only when they are
concrete (a traced array's values are unknown until it runs).
"""

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.errors import ConfigError


def _shape(x) -> tuple[int, ...]:
  return tuple(jnp.shape(x))


def check_inputs(
  function: str,
  params,
  xs,
  *,
  gates: int,
  bias_shape,
  states=(),
  mask=None,
  lengths=None,
  input_dropout_mask=None,
  recurrent_dropout_mask=None,
) -> None:
  """Holds a call of a recurrent layer's pure function against its parameters.

  Args:
    function: the function's name, for the error line ("gru", "lstm").
    params: ``{"kernel": [E, gates * H], "recurrent_kernel": [H, gates * H], "bias": bias_shape(H)}``.
    xs: [B, T, E].
    gates: gate blocks per weight matrix (4 for the LSTM, 3 for the GRU).
    bias_shape: H -> the bias' shape ((4H,) for the LSTM, (2, 3H) for the GRU).
    states: ``(name, array)`` pairs of the initial state, each [B, H].
    mask: None or [B, T]; lengths: None or [B] integers in [0, T]; the dropout masks None, [B, E], [B, H].

  Raises:
    ConfigError: one line naming the first argument that does not fit, and what it must be.
  """
  missing = [
    k for k in ("kernel", "recurrent_kernel", "bias") if not isinstance(params, dict) or k not in params
  ]
  if missing:
    raise ConfigError(
      f"{function}() params lack {', '.join(missing)}; pass a dict with kernel, recurrent_kernel and bias "
      f"(init_{'gru_' if function == 'gru' else ''}params makes one)"
    )
  if jnp.ndim(xs) != 3:
    raise ConfigError(f"{function}() takes xs as [batch, steps, features]; got shape {_shape(xs)}")
  batch, steps, input_size = _shape(xs)
  recurrent = _shape(params["recurrent_kernel"])
  if len(recurrent) != 2 or recurrent[1] != gates * recurrent[0]:
    raise ConfigError(f"{function}() recurrent_kernel must be [H, {gates}H]; got shape {recurrent}")
  hidden = recurrent[0]
  expected = {
    "kernel": (input_size, gates * hidden),
    "bias": tuple(bias_shape(hidden)),
  }
  for name, shape in expected.items():
    if _shape(params[name]) != shape:
      what = f"[{input_size} inputs, {gates} x {hidden}]" if name == "kernel" else str(shape)
      raise ConfigError(
        f"{function}() params['{name}'] has shape {_shape(params[name])}, but xs has {input_size} features "
        f"and the hidden size is {hidden}: it must be {what}"
        if name == "kernel"
        else f"{function}() params['bias'] has shape {_shape(params['bias'])}; with hidden size {hidden} it "
        f"must be {what}"
      )
  for name, state in states:
    if _shape(state) != (batch, hidden):
      raise ConfigError(
        f"{function}() {name} must be [batch, hidden] = {(batch, hidden)}; got {_shape(state)}"
      )
  if mask is not None and lengths is not None:
    raise ConfigError(f"pass either mask or lengths to {function}(), not both")
  if mask is not None and _shape(mask) != (batch, steps):
    raise ConfigError(f"{function}() mask must be [batch, steps] = {(batch, steps)}; got {_shape(mask)}")
  if lengths is not None:
    if _shape(lengths) != (batch,) or not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
      raise ConfigError(
        f"{function}() lengths must be [batch] = ({batch},) integers; got shape {_shape(lengths)} "
        f"of {jnp.result_type(lengths)}"
      )
    if not isinstance(lengths, jax.core.Tracer) and batch:
      values = np.asarray(lengths)
      if values.min() < 0 or values.max() > steps:
        raise ConfigError(
          f"{function}() lengths must lie in [0, {steps}] (the steps of xs); got {values.min()}..{values.max()}"
        )
  for name, dropout, width in (
    ("input_dropout_mask", input_dropout_mask, input_size),
    ("recurrent_dropout_mask", recurrent_dropout_mask, hidden),
  ):
    if dropout is not None and _shape(dropout) != (batch, width):
      raise ConfigError(f"{function}() {name} must be {(batch, width)}; got {_shape(dropout)}")

"""What every recurrent layer's inputs must be, checked once, at trace time, before any engine runs.

`check_inputs` holds a call's arrays against each other (ranks, the input width against the parameters,
the batch and time sizes, floating dtypes, the masks' shapes and, where they are concrete, the lengths'
range) and raises one `InputError` naming the shapes. The parameters are held to the cell's own specs
(`seqclf.rnn.cells.Cell.param_shapes`), so every engine, the pure function `seqclf.rnn.rnn` and the Linen
and NNX layers refuse the same inputs with the same words: a C++ or GPU kernel never sees a buffer whose
size disagrees with another's.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.errors import ConfigError


class InputError(ConfigError, ValueError):
  """Arrays passed to a recurrent layer that do not fit each other (shapes, dtypes, lengths)."""


class Sizes(NamedTuple):
  batch: int
  steps: int
  input_size: int
  hidden: int


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _dtype(x):
  # A Python list or scalar (say lengths=[3, 5]) has no dtype of its own: numpy's reading of it.
  return jnp.result_type(x if hasattr(x, "dtype") else np.asarray(x))


def as_array(cell, name: str, x):
  """``x`` as a JAX array, read as `jax.numpy.asarray` reads an array-like (a nested list or tuple of
  numbers, a numpy array); None stays None.

  Raises:
    InputError: naming the argument, for what is no array (ragged lists, strings, objects).
  """
  if x is None:
    return None
  try:
    return jnp.asarray(x)
  except (TypeError, ValueError) as error:
    raise InputError(
      f"{cell.name}(): {name} must be an array or nested lists of numbers of one shape, "
      f"got {type(x).__name__} ({error})"
    ) from None


def check_inputs(
  params,
  xs,
  *,
  cell,
  initial_state=None,
  mask=None,
  lengths=None,
  input_dropout_mask=None,
  recurrent_dropout_mask=None,
) -> Sizes:
  """Checks a recurrent layer call's arrays against each other; returns its sizes.

  Args:
    params: a mapping with ``kernel`` [E, G * H], ``recurrent_kernel`` [H, G * H] and ``bias``
      (`seqclf.rnn.cells.Cell.param_shapes`).
    xs: [B, T, E] inputs. T = 0 and B = 0 are valid (the caller returns the trivial result).
    cell: the `seqclf.rnn.cells.Cell` whose parameters these are: its gate count G, its bias rows and its
      state, and its name for the messages.
    initial_state: None, or a tuple of one [B, H] array per name in ``cell.state_names``.
    mask: optional [B, T] (bool or integer).
    lengths: optional [B] integers in [0, T] (checked where concrete; under ``jit`` a traced length
      outside acts as its nearest bound, as the mask it becomes does).
    input_dropout_mask, recurrent_dropout_mask: optional [B, E] and [B, H].

  Raises:
    InputError (a `ConfigError` and a `ValueError`): one line naming the arrays and shapes that disagree.
  """

  gates, state_names = cell.gates, tuple(f"{name}0" for name in cell.state_names)

  def fail(message):
    raise InputError(f"{cell.name}(): {message}")

  if not hasattr(params, "keys") or not {"kernel", "recurrent_kernel", "bias"} <= set(params.keys()):
    got = sorted(params.keys()) if hasattr(params, "keys") else type(params).__name__
    fail(f"params must be a mapping with kernel, recurrent_kernel and bias, got {got}")
  kernel, recurrent, bias = (
    _shape(params["kernel"]),
    _shape(params["recurrent_kernel"]),
    _shape(params["bias"]),
  )
  if len(recurrent) != 2 or recurrent[1] != gates * recurrent[0]:
    fail(f"params['recurrent_kernel'] must be [H, {gates} * H], got {list(recurrent)}")
  hidden = recurrent[0]
  if hidden < 1:
    fail("the hidden size (params['recurrent_kernel'].shape[0]) must be at least 1, got 0")
  if len(kernel) != 2 or kernel[1] != gates * hidden:
    fail(f"params['kernel'] must be [E, {gates * hidden}] for hidden size {hidden}, got {list(kernel)}")
  expected_bias = cell.param_shapes(0, hidden)["bias"]
  if bias != expected_bias:
    fail(f"params['bias'] must be {list(expected_bias)} for hidden size {hidden}, got {list(bias)}")
  input_size = kernel[0]
  x_shape = _shape(xs)
  if len(x_shape) != 3:
    fail(f"xs must be [batch, steps, features] (rank 3), got shape {list(x_shape)}")
  batch, steps, width = x_shape
  if width != input_size:
    fail(
      f"xs has {width} features per step but params['kernel'] is {list(kernel)}, made for {input_size}; "
      "pass inputs of that width or parameters made for this one"
    )
  for name, x in [
    ("xs", xs),
    *((f"params[{k!r}]", params[k]) for k in ("kernel", "recurrent_kernel", "bias")),
  ]:
    if not jnp.issubdtype(_dtype(x), jnp.floating):
      fail(f"{name} must be a floating-point array, got {_dtype(x)}")

  def expect(name, x, shape):
    if x is not None and _shape(x) != shape:
      fail(
        f"{name} must be {list(shape)} for xs of shape {list(x_shape)} and hidden size {hidden}, got {list(_shape(x))}"
      )

  if initial_state is not None:
    parts = tuple(initial_state) if isinstance(initial_state, (tuple, list)) else (initial_state,)
    if len(parts) != len(state_names):
      fail(f"initial_state must be ({', '.join(state_names)}), got {len(parts)} array(s)")
    for name, part in zip(state_names, parts):
      expect(f"initial_state {name}", part, (batch, hidden))
      if not jnp.issubdtype(_dtype(part), jnp.floating):
        fail(f"initial_state {name} must be a floating-point array, got {_dtype(part)}")
  if mask is not None and lengths is not None:
    fail("pass either mask or lengths, not both")
  expect("mask", mask, (batch, steps))
  if mask is not None and not (
    jnp.issubdtype(_dtype(mask), jnp.bool_) or jnp.issubdtype(_dtype(mask), jnp.integer)
  ):
    fail(f"mask must be bool (True on the steps to run), got {_dtype(mask)}")
  expect("lengths", lengths, (batch,))
  if lengths is not None:
    if not jnp.issubdtype(_dtype(lengths), jnp.integer):
      fail(f"lengths must be integers, got {_dtype(lengths)}")
    if not isinstance(lengths, jax.core.Tracer) and batch > 0:
      values = np.asarray(lengths)
      if values.min() < 0 or values.max() > steps:
        fail(
          f"lengths must lie in [0, {steps}] (the steps of xs), got values from {values.min()} to {values.max()}"
        )
  expect("input_dropout_mask", input_dropout_mask, (batch, input_size))
  expect("recurrent_dropout_mask", recurrent_dropout_mask, (batch, hidden))
  return Sizes(batch, steps, input_size, hidden)

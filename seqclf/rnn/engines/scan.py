"""Engine ``scan``, the reference: one `jax.lax.scan` step per time step over a cell's own step
(`seqclf.rnn.cells.Cell.step`), differentiated by JAX.

Every cell has it, with no registration (`run` takes the `Cell`); it is the oracle every other engine is
tested against, itself tested against PyTorch and Keras. It is written for clarity, not speed: the input
projection stays inside the loop and the gradients come from autodiff through the scan, so it also has
forward-mode derivatives (``jax.jvp``), which the hand-written VJPs of the fast engines lack.
"""

import jax
import jax.numpy as jnp

from seqclf.rnn.cells import GRU_CELL, LSTM_CELL, RECURRENT_ACTIVATIONS, Cell


def _loop(
  cell, params, xs, state, step_mask, input_dropout_mask, recurrent_dropout_mask, recurrent_activation
):
  """The masked step ``(state, (x_t, keep)) -> state`` and its time-major inputs."""
  input_dropout_mask = jax.lax.stop_gradient(input_dropout_mask)
  recurrent_dropout_mask = jax.lax.stop_gradient(recurrent_dropout_mask)
  xs = xs * input_dropout_mask[:, None, :]
  gate = RECURRENT_ACTIVATIONS[recurrent_activation]

  def step(state, inputs):
    x_t, keep = inputs
    new = cell.step(params, state, x_t, recurrent_dropout_mask, gate)
    return tuple(jnp.where(keep[:, None], n, s) for n, s in zip(new, state))

  return step, (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(step_mask, 0, 1))


def run(
  cell: Cell,
  params,
  xs,
  state,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  recurrent_activation="sigmoid",
  return_sequences=True,
):
  """Runs ``cell`` over ``xs`` [B, T, E]; see `seqclf.rnn.rnn` for the contract.

  Args:
    cell: the cell.
    params: the cell's parameters.
    xs: [B, T, E] inputs.
    state: a tuple of [B, H] arrays in ``cell.state_names`` order.
    step_mask: [B, T] bool; where False the state is carried over unchanged and the output repeats h.
    input_dropout_mask, recurrent_dropout_mask: [B, E] and [B, H], already scaled; constants.
    recurrent_activation: the gates' activation, a name in `seqclf.rnn.cells.RECURRENT_ACTIVATIONS`.
    return_sequences: False runs a loop without per-step outputs (XLA keeps a loop's outputs even where
      nobody reads them) and returns the final h in their place.

  Returns:
    ``(outputs [B, T, H], state)``, or ``(h [B, H], state)`` with ``return_sequences=False``.
  """
  step, inputs = _loop(
    cell,
    params,
    xs,
    tuple(state),
    step_mask,
    input_dropout_mask,
    recurrent_dropout_mask,
    recurrent_activation,
  )
  if not return_sequences:
    final = jax.lax.scan(lambda carry, inputs: (step(carry, inputs), None), tuple(state), inputs)[0]
    return final[0], final

  def step_with_output(carry, inputs):
    carry = step(carry, inputs)
    return carry, carry[0]

  final, hs = jax.lax.scan(step_with_output, tuple(state), inputs)
  return jnp.swapaxes(hs, 0, 1), final


def lstm(
  params,
  xs,
  h0,
  c0,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  recurrent_activation="sigmoid",
  return_sequences=True,
):
  """The LSTM engine signature (`seqclf.rnn.lstm`): ``-> (outputs [B, T, H], (h, c))``; the keywords as
  `run`'s."""
  return run(
    LSTM_CELL,
    params,
    xs,
    (h0, c0),
    step_mask,
    input_dropout_mask,
    recurrent_dropout_mask,
    recurrent_activation=recurrent_activation,
    return_sequences=return_sequences,
  )


def final_state(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, recurrent_activation="sigmoid"
):
  """`lstm`'s final state ``(h, c)`` only, from a loop that stores nothing per step."""
  args = (params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)
  return lstm(*args, recurrent_activation=recurrent_activation, return_sequences=False)[1]


def gru(
  params,
  xs,
  h0,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  recurrent_activation="sigmoid",
  return_sequences=True,
):
  """The GRU engine signature (`seqclf.rnn.gru`): ``-> (outputs [B, T, H], h)``; the keywords as `run`'s."""
  outputs, (h,) = run(
    GRU_CELL,
    params,
    xs,
    (h0,),
    step_mask,
    input_dropout_mask,
    recurrent_dropout_mask,
    recurrent_activation=recurrent_activation,
    return_sequences=return_sequences,
  )
  return outputs, h

"""The shared shape of every fast engine: hoisted matmuls around a pluggable recurrence.

An LSTM step spends most of its FLOPs in two matmuls: the input projection ``x_t @ W`` and the recurrent
one ``h_{t-1} @ U``. Only the second depends on the previous step. So the fast engines

  1. project the inputs of *all* time steps at once, ``xw = x @ W + b`` (one large matmul),
  2. run only the recurrence ``z_t = xw_t + h_{t-1} @ U`` step by step (the part an engine implements:
     a `lax.scan` in `fused.py`, a single GPU kernel launch in `pallas_gpu.py`), and
  3. in the backward pass get the recurrence to return the gate gradients ``dz`` of every step, after
     which ``dW``, ``dU``, ``db`` and ``dx`` are again single large matmuls / reductions.

This module holds steps 1 and 3 and the custom VJP that ties them together; an engine supplies a
`Recurrence` (its forward and backward loops) and gets an LSTM with the `seqclf.rnn.engines` contract.
An engine that lays out its own arrays (`mosaic_gpu.py`) builds on `with_return_sequences` directly.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqclf import lowering
from seqclf.rnn.cells import RECURRENT_ACTIVATIONS, matmul


class Recurrence(NamedTuple):
  """The time loop of an engine, in time-major layout.

  forward(xw, recurrent_kernel, h0, c0, step_mask, recurrent_dropout_mask) -> (hs, cs, gates)
    xw [T, B, 4H] (input projection plus bias), step_mask [T, B] bool, h0, c0 and
    recurrent_dropout_mask [B, H].
    Returns hs, cs [T, B, H] (state after each step) and gates [T, B, 4H]: the activated gates
    (i, f and o through the recurrent activation, tanh g) of each step, which the backward loop needs.
  backward(recurrent_kernel, gates, cs, c0, step_mask, recurrent_dropout_mask, dhs, dh_last, dc_last)
      -> (dz, dh0, dc0)
    dhs [T, B, H] is the cotangent of the outputs; dh_last/dc_last of the final state. Returns the
    pre-activation gate gradients dz [T, B, 4H] and the cotangents of h0 and c0.
  """

  forward: Callable
  backward: Callable
  # Optional forward for when no gradient is taken, with the LSTM engine signature (`seqclf.rnn.engines`)
  # (params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask) -> (outputs, (h, c)).
  # It stores nothing for a backward pass (XLA does not drop a loop's unused outputs, so `forward`
  # would pay for the residuals) and need not hoist anything.
  inference: Callable | None = None
  # Optional forward for when no gradient is taken of a ``return_sequences=False`` call, with the engine
  # signature but returning the final state only: (params, xs, h0, c0, step_mask, input_dropout_mask,
  # recurrent_dropout_mask) -> (h, c), each [B, H] (h and c after each row's last unmasked step). It stores
  # nothing per step, the point of asking for the final state only. None: `make_lstm` runs the full
  # inference and keeps its state.
  final_state: Callable | None = None


# The derivative of each of `scan.RECURRENT_ACTIVATIONS` from its output y, as the backward loops hold the
# activated gates: sigmoid' = y (1 - y); hard_sigmoid' = 0.2 where it is not clipped (0 < y < 1), else 0.
GATE_DERIVATIVES = {
  "sigmoid": lambda y: y * (1.0 - y),
  "hard_sigmoid": lambda y: jnp.where((y > 0.0) & (y < 1.0), 0.2, 0.0).astype(y.dtype),
}


def lstm_cell_backward(dh, dc, gates, c_prev, c, recurrent_activation="sigmoid", tanh=jnp.tanh):
  """Gradients through one unmasked LSTM step, given the cotangents ``dh``, ``dc`` of its new state.

  Returns (dz, dc_prev): the pre-activation gate gradients [B, 4H] and the cotangent of the previous cell
  state. The cotangent of the previous hidden state is ``(dz @ U^T) * recurrent_dropout_mask``, left to
  the caller so that a kernel can fuse the product into its own loop. ``tanh``: how to compute tanh(c).
  """
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  derivative = GATE_DERIVATIVES[recurrent_activation]
  tanh_c = tanh(c)
  dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
  dz = jnp.concatenate(
    [
      dc * g * derivative(i),
      dc * c_prev * derivative(f),
      dc * i * (1.0 - g * g),
      dh * tanh_c * derivative(o),
    ],
    axis=-1,
  )
  return dz, dc * f


def scan_recurrence(
  product: Callable = matmul,
  *,
  state_dtype=None,
  unroll: int = 1,
  inference: Callable | None = None,
  final_state: Callable | None = None,
  recurrent_activation: str = "sigmoid",
  activations: tuple[Callable, Callable] | None = None,
) -> Recurrence:
  """The recurrence as two plain `lax.scan`s over packed [B, 4H] gates: `fused`'s loop and every kernel's
  reference.

  ``product(a, b)`` is the step's recurrent matmul, so a reference can round its operands as its kernel
  does; ``state_dtype`` (say float32 for kernels that keep float32 state whatever the inputs) is the dtype
  the loops compute in, the results being cast back to the inputs' dtypes; None keeps the inputs' dtypes.
  ``recurrent_activation`` names the input, forget and output gates' activation in
  `scan.RECURRENT_ACTIVATIONS`; ``activations`` = (gate activation, tanh), if given, computes them as a
  kernel does (its own formulas for the same functions: the backward still takes the gates' derivative
  from ``recurrent_activation``, so the two must agree). ``inference`` and ``final_state`` are the
  `Recurrence`'s.
  """
  cast = (lambda x: x) if state_dtype is None else (lambda x: x.astype(state_dtype))
  gate, tanh = activations or (RECURRENT_ACTIVATIONS[recurrent_activation], jnp.tanh)

  def forward(xw, recurrent_kernel, h0, c0, step_mask, recurrent_dropout_mask):
    recurrent_mask = cast(recurrent_dropout_mask)

    def step(carry, inputs):
      h, c = carry
      xw_t, keep = inputs
      z = cast(xw_t) + product(h * recurrent_mask, recurrent_kernel)
      i, f, g, o = jnp.split(z, 4, axis=-1)
      i, f, g, o = gate(i), gate(f), tanh(g), gate(o)
      keep = keep[:, None]
      c_new = jnp.where(keep, f * c + i * g, c)
      h_new = jnp.where(keep, o * tanh(c_new), h)
      return (h_new, c_new), (h_new, c_new, jnp.concatenate([i, f, g, o], axis=-1))

    _, outputs = jax.lax.scan(step, (cast(h0), cast(c0)), (xw, step_mask), unroll=unroll)
    return tuple(x.astype(xw.dtype) for x in outputs)

  def backward(recurrent_kernel, gates, cs, c0, step_mask, recurrent_dropout_mask, dhs, dh_last, dc_last):
    cs_state = cast(cs)
    c_prevs = previous_states(cast(c0), cs_state)
    recurrent_kernel_t, recurrent_mask = recurrent_kernel.T, cast(recurrent_dropout_mask)

    def step(carry, inputs):
      dh_next, dc_next = carry
      dh_out, gates_t, c_prev, c_t, keep = inputs
      dh = dh_next + dh_out
      dz, dc_prev = lstm_cell_backward(dh, dc_next, gates_t, c_prev, c_t, recurrent_activation, tanh)
      keep = keep[:, None]
      dz = jnp.where(keep, dz, 0.0)
      # A masked step passed the state through unchanged, so its cotangents pass through too.
      dh_prev = jnp.where(keep, product(dz, recurrent_kernel_t) * recurrent_mask, dh)
      return (dh_prev, jnp.where(keep, dc_prev, dc_next)), dz

    inputs = (cast(dhs), cast(gates), c_prevs, cs_state, step_mask)
    initial = (cast(dh_last), cast(dc_last))
    (dh0, dc0), dz = jax.lax.scan(step, initial, inputs, reverse=True, unroll=unroll)
    return dz.astype(gates.dtype), dh0.astype(dh_last.dtype), dc0.astype(dc_last.dtype)

  return Recurrence(forward=forward, backward=backward, inference=inference, final_state=final_state)


def custom_vjp_engine(inference: Callable, forward: Callable, backward: Callable) -> Callable:
  """An engine-signature function of any cell (see `seqclf.rnn.engines`) with a hand-written VJP; shared
  by every engine that writes its own backward pass (`with_return_sequences` here, the GRU of `fused`,
  `cpu_kernel`).

  ``inference(params, xs, *initial_state, step_mask, input_dropout_mask, recurrent_dropout_mask)`` runs
  when no gradient is taken; ``forward`` (same arguments) returns ``(outputs, residuals)``;
  ``backward(residuals, cotangents)`` returns the cotangents ``(d_params, d_xs, *d_initial_state)``. The
  three masks are constants and get none.
  """

  @jax.custom_vjp
  def engine(*args):
    return inference(*args)

  def backward_with_constant_masks(residuals, cotangents):
    # None is JAX's symbolic zero.
    return (*backward(residuals, cotangents), None, None, None)

  engine.defvjp(forward, backward_with_constant_masks)
  return engine


def time_major_rows(x):
  """[B, T, X] -> [T * B, X]: one row per (step, sequence), ready for a plain 2-D matmul."""
  batch, steps, width = x.shape
  # Every size spelled out: a -1 cannot be inferred when another size is 0 (B = 0, T = 0 or X = 0).
  return jnp.swapaxes(x, 0, 1).reshape(steps * batch, width)


def previous_states(initial, states):
  """The state before each step, [T, B, H], from the initial state [B, H] and the states after each step
  [T, B, H]; for T = 0 none (slicing ``states[:-1]`` would keep the initial state)."""
  return jnp.concatenate([initial[None], states], axis=0)[: states.shape[0]]


def project(kernel, bias, xs, input_dropout_mask):
  """The hoisted input projection: (xw [T, B, G * H] = (xs * mask) @ W + b, time-major; the dropped
  inputs as [T * B, E] rows, which the weight gradient reads)."""
  batch, steps, _ = xs.shape
  dropped_rows = time_major_rows(xs * input_dropout_mask[:, None, :])
  xw = (matmul(dropped_rows, kernel) + bias).reshape(steps, batch, kernel.shape[-1])
  return xw, dropped_rows


def make_lstm(recurrence: Recurrence) -> Callable:
  """Builds an LSTM function with the LSTM engine signature (`seqclf.rnn.engines`) around ``recurrence``, plus
  ``return_sequences`` (`with_return_sequences`; without a gradient, False runs ``recurrence.final_state``).

  The hoisted products are written as 2-D matmuls over [T * B, X] rows on purpose: XLA's CPU backend
  runs the equivalent multi-axis einsums (e.g. ``"tbh,tbg->hg"``) 3-5x slower at the article's shapes.
  """

  def forward(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    xw, dropped_rows = project(params["kernel"], params["bias"], xs, input_dropout_mask)
    step_mask_t = jnp.swapaxes(step_mask, 0, 1)
    hs, cs, gates = recurrence.forward(
      xw, params["recurrent_kernel"], h0, c0, step_mask_t, recurrent_dropout_mask
    )
    steps = hs.shape[0]
    outputs = (jnp.swapaxes(hs, 0, 1), (hs[-1], cs[-1]) if steps else (h0, c0))
    residuals = (
      params,
      dropped_rows,
      h0,
      c0,
      step_mask_t,
      input_dropout_mask,
      recurrent_dropout_mask,
      hs,
      cs,
      gates,
    )
    return outputs, residuals

  def backward(residuals, dhs, dh_last, dc_last):
    """The cotangents of the inputs, given those of every step's h (``dhs`` [T, B, H], None: zeros) and
    of the final state."""
    (params, dropped_rows, h0, c0, step_mask_t, input_dropout_mask, recurrent_dropout_mask, hs, cs, gates) = (
      residuals
    )
    steps, batch, hidden = hs.shape
    dhs = jnp.zeros_like(hs) if dhs is None else dhs
    dz, dh0, dc0 = recurrence.backward(
      params["recurrent_kernel"], gates, cs, c0, step_mask_t, recurrent_dropout_mask, dhs, dh_last, dc_last
    )
    # The hoisted weight gradients: every step's contribution in one matmul each.
    dz_rows = dz.reshape(steps * batch, dz.shape[-1])
    h_prev_rows = (previous_states(h0, hs) * recurrent_dropout_mask).reshape(steps * batch, hidden)
    d_params = {
      "kernel": matmul(dropped_rows.T, dz_rows),
      "recurrent_kernel": matmul(h_prev_rows.T, dz_rows),
      "bias": dz_rows.sum(axis=0),
    }
    d_xs = jnp.swapaxes(
      matmul(dz_rows, params["kernel"].T).reshape(steps, batch, params["kernel"].shape[0]), 0, 1
    )
    d_xs = d_xs * input_dropout_mask[:, None, :]
    return d_params, d_xs, dh0, dc0

  run = recurrence.inference or (lambda *args: forward(*args)[0])
  final_state = recurrence.final_state or (lambda *args: run(*args)[1])

  def batch_major_backward(residuals, d_outputs, dh_last, dc_last):
    dhs = None if d_outputs is None else jnp.swapaxes(d_outputs, 0, 1)
    return backward(residuals, dhs, dh_last, dc_last)

  return with_return_sequences(run, final_state, forward, batch_major_backward)


def with_return_sequences(inference: Callable, final_state: Callable, forward: Callable, backward: Callable):
  """An engine-signature LSTM that also takes ``return_sequences`` (a Python bool, keyword only), from
  the pieces of a hand-written VJP: with False it returns ``(h, (h, c))``, the final h in place of the
  outputs, running ``final_state`` when no gradient is taken; under a gradient it runs the full forward
  (the backward loop needs every step's state), and the outputs' cotangent adds to the final h's.

  ``inference(*args) -> (outputs, (h, c))`` and ``final_state(*args) -> (h, c)`` run without a gradient;
  ``forward(*args) -> ((outputs, (h, c)), residuals)``; ``backward(residuals, d_outputs, dh_last,
  dc_last) -> (d_params, d_xs, dh0, dc0)``, with ``d_outputs`` [B, T, H] or None (every step's is 0).
  """

  def sequences_backward(residuals, cotangents):
    d_outputs, (dh_last, dc_last) = cotangents
    return backward(residuals, d_outputs, dh_last, dc_last)

  sequences = custom_vjp_engine(inference, forward, sequences_backward)

  def final_inference(*args):
    h, c = final_state(*args)
    return h, (h, c)

  def final_forward(*args):
    (_, state), residuals = forward(*args)
    return (state[0], state), residuals

  def final_backward(residuals, cotangents):
    # The outputs are the final h: their cotangent joins the final h's, and no other step's h has one.
    dh, (dh_last, dc_last) = cotangents
    return backward(residuals, None, dh + dh_last, dc_last)

  final = custom_vjp_engine(final_inference, final_forward, final_backward)

  def lstm(
    params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, return_sequences=True
  ):
    engine = sequences if return_sequences else final
    return engine(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)

  return lstm


def pad_to(x, shape):
  """Zero-pads ``x`` at the end of each axis up to ``shape`` (the GPU kernels' block padding)."""
  return jnp.pad(x, [(0, size - dim) for dim, size in zip(x.shape, shape)])


def interpret() -> bool:
  """Whether the Pallas GPU kernels run interpreted: unless tracing for a GPU. Read at trace time."""
  return lowering.target_platform() != "gpu"

"""The ``fused`` engine: hoisted input projection and weight gradients around a lean `lax.scan`.

Compared with the reference (`scan.py`) the loop body holds only the recurrent matmul, with all four gates
in one [B, H] x [H, 4H] product, and the backward pass is a hand-written reverse scan (the custom VJP in
`hoisted.py`; its loops are `hoisted.scan_recurrence`, which every kernel's reference shares) that stores
the activated gates instead of re-deriving them and leaves every weight gradient to one large matmul after
the loop. Without a gradient (evaluation, prediction) it runs the reference cell, and with
``return_sequences=False`` that cell's loop without per-step outputs (`scan.final_state`).

The GRU (`gru`): the same hoisting around the GRU cell, its own loops. Forward: ``xw = x W + b`` for all steps as one [T * B, E] x [E, 3H] matmul, then a loop whose body holds
only the recurrent product ``h U + b'`` ([B, H] x [H, 3H]) and the gate arithmetic; it stores per step the
activated gates z, r, n and the recurrent candidate term ``hn = h U_n + b'_n`` ([T, B, 4H]), which is all
the backward pass needs besides the states. Backward: a reverse scan gives per step the pre-activation
gradients ``dz = [dz_z, dz_r, dn]`` of the input side and ``[dz_z, dz_r, r * dn]`` of the recurrent side
(``dn`` the candidate's pre-activation gradient), and after the loop every weight gradient and ``dx`` is
one large matmul over [T * B] rows. Without a gradient (evaluation) it runs the reference cell.

Gradients of one unmasked step, with ``dh`` the cotangent of its new state:
    dz_z = dh (h_prev - n) z (1 - z)       dn = dh (1 - z) (1 - n^2)
    dz_r = dn hn r (1 - r)                 dhn = dn r
    dh_prev = ([dz_z, dz_r, dhn] U^T) * recurrent_dropout_mask + dh z
A masked step passed the state through, so its cotangent passes through too.
"""

import functools

import jax
import jax.numpy as jnp

from seqclf.rnn.cells import RECURRENT_ACTIVATIONS, matmul
from seqclf.rnn.engines import hoisted, scan

# Steps per loop iteration. On CPU unrolling measured slower (B=64, T=500, H=100: 1 step 46-67 ms,
# 4 steps 57-84 ms per forward), so the default is no unrolling.
UNROLL = 1


# Without a gradient the reference cell is the fastest forward on CPU (B=64, T=500, H=100: 50 ms against
# 132 ms for the hoisted forward, whose [T*B, 32] x [32, 400] projection XLA's CPU matmul runs poorly).
# One custom-VJP LSTM per gate activation of `RECURRENT_ACTIVATIONS`.
_LSTMS = {
  name: hoisted.make_lstm(
    hoisted.scan_recurrence(
      matmul,
      unroll=UNROLL,
      inference=functools.partial(scan.lstm, recurrent_activation=name),
      final_state=functools.partial(scan.final_state, recurrent_activation=name),
      recurrent_activation=name,
    )
  )
  for name in RECURRENT_ACTIVATIONS
}


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
  """The LSTM engine signature (`seqclf.rnn.engines.scan.lstm`), with the gates' ``recurrent_activation`` and
  ``return_sequences`` (False: ``(h, (h, c))``, no per-step outputs stored)."""
  return _LSTMS[recurrent_activation](
    params,
    xs,
    h0,
    c0,
    step_mask,
    input_dropout_mask,
    recurrent_dropout_mask,
    return_sequences=return_sequences,
  )


# --- GRU ---


def gru_cell_backward(dh, gates, h_prev, derivative=hoisted.GATE_DERIVATIVES["sigmoid"]):
  """Gradients through one unmasked step (module docstring): from the cotangent ``dh`` of its new state,
  the stored gates [B, 4H] (z, r, n, hn) and ``h_prev``, returns ``(dz, carried)``: the pre-activation
  gradients [B, 4H] as [dz_z, dz_r, dn, dhn] and ``dh * z``, the part of dh_prev that skips the matmul.
  ``derivative``: of the update and reset gates' activation, from its output (`hoisted.GATE_DERIVATIVES`)."""
  z, r, n, hn = jnp.split(gates, 4, axis=-1)
  dz_z = dh * (h_prev - n) * derivative(z)
  dn = dh * (1.0 - z) * (1.0 - n * n)
  dz_r = dn * hn * derivative(r)
  return jnp.concatenate([dz_z, dz_r, dn, dn * r], axis=-1), dh * z


def input_side(dz):
  """[.., 4H] gate gradients -> [dz_z, dz_r, dn]: what the input projection x W + b receives."""
  return dz[..., : 3 * dz.shape[-1] // 4]


def recurrent_side(dz):
  """[.., 4H] gate gradients -> [dz_z, dz_r, r dn]: what the recurrent projection h U + b' receives."""
  hidden = dz.shape[-1] // 4
  return jnp.concatenate([dz[..., : 2 * hidden], dz[..., 3 * hidden :]], axis=-1)


def gru_forward(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, recurrent_activation):
  gate = RECURRENT_ACTIVATIONS[recurrent_activation]
  recurrent_kernel, recurrent_bias = params["recurrent_kernel"], params["bias"][1]
  xw, dropped_rows = hoisted.project(params["kernel"], params["bias"][0], xs, input_dropout_mask)

  def step(h, inputs):
    xw_t, keep = inputs
    x_z, x_r, x_n = jnp.split(xw_t, 3, axis=-1)
    h_z, h_r, hn = jnp.split(
      matmul(h * recurrent_dropout_mask, recurrent_kernel) + recurrent_bias, 3, axis=-1
    )
    z, r = gate(x_z + h_z), gate(x_r + h_r)
    n = jnp.tanh(x_n + r * hn)
    h_new = jnp.where(keep[:, None], z * h + (1.0 - z) * n, h)
    return h_new, (h_new, jnp.concatenate([z, r, n, hn], axis=-1))

  step_mask_t = jnp.swapaxes(step_mask, 0, 1)
  h, (hs, gates) = jax.lax.scan(step, h0, (xw, step_mask_t))
  residuals = (params, dropped_rows, h0, step_mask_t, input_dropout_mask, recurrent_dropout_mask, hs, gates)
  return (jnp.swapaxes(hs, 0, 1), h), residuals


def gru_backward(recurrent_activation, residuals, cotangents):
  derivative = hoisted.GATE_DERIVATIVES[recurrent_activation]
  params, dropped_rows, h0, step_mask_t, input_dropout_mask, recurrent_dropout_mask, hs, gates = residuals
  d_outputs, dh_last = cotangents
  steps, batch, hidden = hs.shape
  h_prevs = hoisted.previous_states(h0, hs)
  recurrent_kernel_t = params["recurrent_kernel"].T

  def step(dh_next, inputs):
    dh_out, gates_t, h_prev, keep = inputs
    dh = dh_next + dh_out
    dz, carried = gru_cell_backward(dh, gates_t, h_prev, derivative)
    keep = keep[:, None]
    dz = jnp.where(keep, dz, 0.0)
    dh_prev = matmul(recurrent_side(dz), recurrent_kernel_t) * recurrent_dropout_mask + carried
    return jnp.where(keep, dh_prev, dh), dz

  inputs = (jnp.swapaxes(d_outputs, 0, 1), gates, h_prevs, step_mask_t)
  dh0, dz = jax.lax.scan(step, dh_last, inputs, reverse=True)
  dz_rows = dz.reshape(steps * batch, dz.shape[-1])
  dz_in, dz_rec = input_side(dz_rows), recurrent_side(dz_rows)
  h_prev_rows = (h_prevs * recurrent_dropout_mask).reshape(steps * batch, hidden)
  d_params = {
    "kernel": matmul(dropped_rows.T, dz_in),
    "recurrent_kernel": matmul(h_prev_rows.T, dz_rec),
    "bias": jnp.stack([dz_in.sum(axis=0), dz_rec.sum(axis=0)]),
  }
  d_xs = jnp.swapaxes(
    matmul(dz_in, params["kernel"].T).reshape(steps, batch, params["kernel"].shape[0]), 0, 1
  )
  return d_params, d_xs * input_dropout_mask[:, None, :], dh0


# One custom-VJP GRU per gate activation of `RECURRENT_ACTIVATIONS`.
_GRUS = {
  name: hoisted.custom_vjp_engine(
    functools.partial(scan.gru, recurrent_activation=name),
    functools.partial(gru_forward, recurrent_activation=name),
    functools.partial(gru_backward, name),
  )
  for name in RECURRENT_ACTIVATIONS
}


def gru(
  params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, recurrent_activation="sigmoid"
):
  """The GRU engine signature (`seqclf.rnn.engines.scan.gru`), with the gates' ``recurrent_activation``."""
  return _GRUS[recurrent_activation](params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask)

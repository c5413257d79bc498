"""The ``fused`` engine: hoisted input projection and weight gradients around a lean `lax.scan`.

Compared with the reference (`scan.py`) the loop body holds only the recurrent matmul, with all four gates
in one [B, H] x [H, 4H] product, and the backward pass is a hand-written reverse scan (custom VJP in
`hoisted.py`) that stores the activated gates instead of re-deriving them and leaves every weight
gradient to one large matmul after the loop. Without a gradient (evaluation, prediction) it runs the
reference cell.
"""

import jax
import jax.numpy as jnp

from seqclf.lstm import hoisted, scan

# Steps per loop iteration. On CPU unrolling measured slower (B=64, T=500, H=100: 1 step 46-67 ms,
# 4 steps 57-84 ms per forward), so the default is no unrolling.
UNROLL = 1


def _cell(xw_t, keep, h, c, recurrent_kernel, recurrent_dropout_mask):
  """One step: the new (h, c) and the activated gates [B, 4H]."""
  z = xw_t + scan.matmul(h * recurrent_dropout_mask, recurrent_kernel)
  i, f, g, o = jnp.split(z, 4, axis=-1)
  i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c_new = f * c + i * g
  h_new = o * jnp.tanh(c_new)
  keep = keep[:, None]
  return jnp.where(keep, h_new, h), jnp.where(keep, c_new, c), jnp.concatenate([i, f, g, o], axis=-1)


def _forward(xw, recurrent_kernel, h0, c0, step_mask, recurrent_dropout_mask):
  def step(carry, inputs):
    h, c, gates = _cell(*inputs, *carry, recurrent_kernel, recurrent_dropout_mask)
    return (h, c), (h, c, gates)

  _, (hs, cs, gates) = jax.lax.scan(step, (h0, c0), (xw, step_mask), unroll=UNROLL)
  return hs, cs, gates


def _backward(recurrent_kernel, gates, cs, c0, step_mask, recurrent_dropout_mask, dhs, dh_last, dc_last):
  c_prevs = jnp.concatenate([c0[None], cs[:-1]], axis=0)
  recurrent_kernel_t = recurrent_kernel.T

  def step(carry, inputs):
    dh_next, dc_next = carry
    dh_out, gates_t, c_prev, c_t, keep = inputs
    dh = dh_next + dh_out
    dz, dc_prev = hoisted.lstm_cell_backward(dh, dc_next, gates_t, c_prev, c_t)
    keep = keep[:, None]
    dz = jnp.where(keep, dz, 0.0)
    # A masked step passed the state through unchanged, so its cotangents pass through too.
    dh_prev = jnp.where(keep, scan.matmul(dz, recurrent_kernel_t) * recurrent_dropout_mask, dh)
    dc_prev = jnp.where(keep, dc_prev, dc_next)
    return (dh_prev, dc_prev), dz

  (dh0, dc0), dz = jax.lax.scan(
    step, (dh_last, dc_last), (dhs, gates, c_prevs, cs, step_mask), reverse=True, unroll=UNROLL
  )
  return dz, dh0, dc0


# Without a gradient the reference cell is the fastest forward on CPU (B=64, T=500, H=100: 50 ms against
# 132 ms for the hoisted forward, whose [T*B, 32] x [32, 400] projection XLA's CPU matmul runs poorly).
RECURRENCE = hoisted.Recurrence(forward=_forward, backward=_backward, inference=scan.lstm)
lstm = hoisted.make_lstm(RECURRENCE)

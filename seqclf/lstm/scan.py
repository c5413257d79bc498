"""The reference LSTM: one `jax.lax.scan` step per time step, differentiated by JAX.

This is the oracle every other engine is tested against. It is written for clarity, not speed: the input
projection stays inside the loop and the gradients come from autodiff through the scan.

Parameter layout (shared by every engine, so a checkpoint trained with one runs with any other):
  ``kernel``           [E, 4H]  input weights
  ``recurrent_kernel`` [H, 4H]  recurrent weights
  ``bias``             [4H]
with the four gates packed in the order input, forget, cell candidate, output (Keras' i, f, c, o).
"""

import functools

import jax
import jax.numpy as jnp

# float32 products on every platform (``matmul_precision="float32"``, the engine contract): left to XLA's
# default, a GPU would use TF32 and a TPU bfloat16 passes.
matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def hard_sigmoid(x):
  """Keras 1's ``hard_sigmoid``, the article's gate activation: clip(0.2 x + 0.5, 0, 1), slope 0.2 on
  (-2.5, 2.5) and flat outside (unlike ``jax.nn.hard_sigmoid`` and Keras 3's, whose slope is 1/6)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


# The activations of the input, forget and output gates (``recurrent_activation`` of `seqclf.lstm.lstm`,
# Keras' name); the cell candidate and the output always use tanh.
RECURRENT_ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "hard_sigmoid": hard_sigmoid}


def _cell(params, xs, step_mask, input_dropout_mask, recurrent_dropout_mask, recurrent_activation):
  """The masked step ``((h, c), (x_t, keep)) -> (h, c)`` and its time-major inputs ``(xs, step_mask)``."""
  kernel, recurrent_kernel, bias = params["kernel"], params["recurrent_kernel"], params["bias"]
  input_dropout_mask = jax.lax.stop_gradient(input_dropout_mask)
  recurrent_dropout_mask = jax.lax.stop_gradient(recurrent_dropout_mask)
  xs = xs * input_dropout_mask[:, None, :]
  gate = RECURRENT_ACTIVATIONS[recurrent_activation]

  def step(carry, inputs):
    h, c = carry
    x_t, keep = inputs
    z = matmul(x_t, kernel) + matmul(h * recurrent_dropout_mask, recurrent_kernel) + bias
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_new = gate(f) * c + gate(i) * jnp.tanh(g)
    h_new = gate(o) * jnp.tanh(c_new)
    keep = keep[:, None]
    return jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)

  return step, (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(step_mask, 0, 1))


def lstm(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, recurrent_activation="sigmoid"
):
  """Runs the LSTM over ``xs`` [B, T, E]; see `seqclf.lstm.api.lstm` for the contract.

  All arguments are arrays here (the api fills in the optional ones). ``step_mask`` [B, T] is boolean;
  where it is False the state is carried over unchanged and the output repeats the previous ``h``.
  The dropout masks [B, E] and [B, H] are already scaled (0 or 1/(1-rate)) and count as constants.
  """
  step, inputs = _cell(
    params, xs, step_mask, input_dropout_mask, recurrent_dropout_mask, recurrent_activation
  )

  def step_with_output(carry, inputs):
    carry = step(carry, inputs)
    return carry, carry[0]

  (h, c), hs = jax.lax.scan(step_with_output, (h0, c0), inputs)
  return jnp.swapaxes(hs, 0, 1), (h, c)


def final_state(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, recurrent_activation="sigmoid"
):
  """`lstm`'s final state ``(h, c)`` only. The loop has no per-step outputs, so nothing [T, B, H] is
  stored: XLA keeps a loop's outputs even where nobody reads them."""
  step, inputs = _cell(
    params, xs, step_mask, input_dropout_mask, recurrent_dropout_mask, recurrent_activation
  )
  return jax.lax.scan(lambda carry, inputs: (step(carry, inputs), None), (h0, c0), inputs)[0]

"""The reference GRU: one `jax.lax.scan` step per time step, differentiated by JAX.

The oracle every GRU engine is tested against, and itself tested against PyTorch's ``nn.GRU`` and
Keras 3's ``GRU`` (tests/test_gru.py). The cell and the parameter layout are in `seqclf.lstm.gru_api`.
"""

import jax
import jax.numpy as jnp

from seqclf.lstm.scan import RECURRENT_ACTIVATIONS, matmul


def gru(
  params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, recurrent_activation="sigmoid"
):
  """Runs the GRU over ``xs`` [B, T, E]; see `seqclf.lstm.gru_api.gru` for the contract.

  All arguments are arrays here (`seqclf.lstm.gru_api.gru` fills in the optional ones). Where ``step_mask``
  [B, T] is False the state is carried over unchanged and the output repeats the previous ``h``.
  ``recurrent_activation`` (`seqclf.lstm.scan.RECURRENT_ACTIVATIONS`) activates the update and reset gates.
  """
  gate = RECURRENT_ACTIVATIONS[recurrent_activation]
  kernel, recurrent_kernel, bias = params["kernel"], params["recurrent_kernel"], params["bias"]
  input_dropout_mask = jax.lax.stop_gradient(input_dropout_mask)
  recurrent_dropout_mask = jax.lax.stop_gradient(recurrent_dropout_mask)
  xs = xs * input_dropout_mask[:, None, :]

  def step(h, inputs):
    x_t, keep = inputs
    x_z, x_r, x_n = jnp.split(matmul(x_t, kernel) + bias[0], 3, axis=-1)
    h_z, h_r, h_n = jnp.split(matmul(h * recurrent_dropout_mask, recurrent_kernel) + bias[1], 3, axis=-1)
    z = gate(x_z + h_z)
    r = gate(x_r + h_r)
    n = jnp.tanh(x_n + r * h_n)
    h_new = jnp.where(keep[:, None], z * h + (1.0 - z) * n, h)
    return h_new, h_new

  h, hs = jax.lax.scan(step, h0, (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(step_mask, 0, 1)))
  return jnp.swapaxes(hs, 0, 1), h

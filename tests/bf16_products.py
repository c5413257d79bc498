"""A matmul that rounds like the ``cpu_kernel`` engines' bfloat16 products, for their plain-JAX references:
operands rounded to bfloat16, products summed in float32, forward and for the input's gradient; the weight
gradient in bfloat16 (the LSTM's kernel) or in float32 (the GRU's, whose weight gradient is a float32
product of the stored steps)."""

import jax
import jax.numpy as jnp


def _bf16_matmul(a, w):
  return jnp.matmul(a.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


def product(weight_gradient: str):
  """``a @ w`` as the kernel computes it; ``weight_gradient``: "bfloat16" or "float32"."""
  assert weight_gradient in ("bfloat16", "float32")

  @jax.custom_vjp
  def matmul(a, w):
    return _bf16_matmul(a, w)

  def forward(a, w):
    return _bf16_matmul(a, w), (a, w)

  def backward(residuals, dz):
    a, w = residuals
    if weight_gradient == "bfloat16":
      dw = _bf16_matmul(a.T, dz)
    else:
      dw = jnp.matmul(a.T, dz, precision=jax.lax.Precision.HIGHEST)
    return _bf16_matmul(dz, w.T), dw

  matmul.defvjp(forward, backward)
  return matmul

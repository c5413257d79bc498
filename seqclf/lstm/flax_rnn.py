"""The ``flax`` engine: Flax's own ``nn.RNN(nn.OptimizedLSTMCell)``, the LSTM most JAX code reaches for.

It is here as the baseline the fast engines are measured against, inside the same model and training loop
(``seqclf.benchmarks.article --engine=cpu_kernel,flax``), not as a choice for speed: ``engine="auto"`` never picks
it. Our packed parameters are split into the cell's per-gate ``Dense`` parameters at every call, so a
checkpoint trained with any engine runs here and the results match ``scan``. Flax's cell has no per-step
mask and no dropout masks, so this engine refuses them (its `seqclf.lstm.api.ENGINES` entry).
"""

import flax.linen as nn
import jax

GATE_NAMES = "ifgo"  # the packing order of seqclf's parameters, and the suffixes of the cell's Dense layers


def cell_params(params):
  """Our ``{kernel, recurrent_kernel, bias}`` as `nn.OptimizedLSTMCell`'s parameters."""
  hidden = params["recurrent_kernel"].shape[0]
  cell = {}
  for k, gate in enumerate(GATE_NAMES):
    columns = slice(k * hidden, (k + 1) * hidden)
    cell[f"i{gate}"] = {"kernel": params["kernel"][:, columns]}
    cell[f"h{gate}"] = {"kernel": params["recurrent_kernel"][:, columns], "bias": params["bias"][columns]}
  return {"params": {"cell": cell}}


def lstm(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
  """The engine signature of `seqclf.lstm.api`; the masks are all-true / all-one here (the api checks)."""
  del step_mask, input_dropout_mask, recurrent_dropout_mask
  layer = nn.RNN(nn.OptimizedLSTMCell(params["recurrent_kernel"].shape[0]), return_carry=True)
  # float32 products (the engine contract), also in the gradient: autodiff keeps a product's precision.
  with jax.default_matmul_precision("float32"):
    (c, h), outputs = layer.apply(cell_params(params), xs, initial_carry=(c0, h0))
  return outputs, (h, c)

"""The ``flax`` GRU engine: Flax's own ``nn.RNN(nn.GRUCell)``, the GRU most JAX code reaches for.

The baseline the fast GRU engines are measured against (``benchmarks.article --engine=cpu_kernel,flax``),
never picked by ``engine="auto"``. Flax's cell is the same GRU (the reset gate scales ``h U_n + b'_n``,
as Keras' ``reset_after=True``), with one bias where the input and recurrent projections are summed: its
``ir``/``iz`` biases are our b_r + b'_r and b_z + b'_z, its ``in`` and ``hn`` biases our b_n and b'_n. So
our parameters map onto it exactly, at every call, and a checkpoint trained with any engine runs here.
No per-step mask and no dropout masks: its `seqclf.lstm.api.GRU_ENGINES` entry refuses them.
"""

import flax.linen as nn
import jax


def cell_params(params):
  """Our ``{kernel, recurrent_kernel, bias}`` as `nn.GRUCell`'s parameters."""
  hidden = params["recurrent_kernel"].shape[0]
  kernel, recurrent_kernel, (b_in, b_rec) = params["kernel"], params["recurrent_kernel"], params["bias"]
  cell = {}
  for k, gate in enumerate("zrn"):
    columns = slice(k * hidden, (k + 1) * hidden)
    summed = b_in[columns] if gate == "n" else b_in[columns] + b_rec[columns]
    cell[f"i{gate}"] = {"kernel": kernel[:, columns], "bias": summed}
    cell[f"h{gate}"] = {"kernel": recurrent_kernel[:, columns]}
  cell["hn"]["bias"] = b_rec[2 * hidden :]
  return {"params": {"cell": cell}}


def gru(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
  """The GRU engine signature; the masks are all-true / all-one here (the api checks)."""
  del step_mask, input_dropout_mask, recurrent_dropout_mask
  layer = nn.RNN(nn.GRUCell(params["recurrent_kernel"].shape[0]), return_carry=True)
  # float32 products (the engine contract), also in the gradient: autodiff keeps a product's precision.
  with jax.default_matmul_precision("float32"):
    h, outputs = layer.apply(cell_params(params), xs, initial_carry=h0)
  return outputs, h

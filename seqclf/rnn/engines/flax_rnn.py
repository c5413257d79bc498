"""The ``flax`` engine: Flax's own ``nn.RNN`` over ``nn.OptimizedLSTMCell`` and ``nn.GRUCell``, the
recurrent layers most JAX code reaches for.

It is here as the baseline the fast engines are measured against, inside the same model and training loop
(``seqclf.benchmarks.article --engine=cpu_kernel,flax``), not as a choice for speed: ``engine="auto"`` never picks
it. Our packed parameters are split into the cell's per-gate ``Dense`` parameters at every call, so a
checkpoint trained with any engine runs here and the results match ``scan``. Flax's cell has no per-step
mask and no dropout masks, so this engine refuses them (its `seqclf.rnn.engines.ENGINES` entries).

Flax's GRU cell is ours (the reset gate scales ``h U_n + b'_n``, as Keras' ``reset_after=True``), with one
bias where the input and recurrent projections are summed: its ``ir``/``iz`` biases are our b_r + b'_r and
b_z + b'_z, its ``in`` and ``hn`` biases our b_n and b'_n. So our parameters map onto it exactly.
"""

import flax.linen as nn
import jax

GATE_NAMES = "ifgo"  # the packing order of seqclf's parameters, and the suffixes of the cell's Dense layers


def lstm_cell_params(params):
  """Our LSTM's ``{kernel, recurrent_kernel, bias}`` as `nn.OptimizedLSTMCell`'s parameters."""
  hidden = params["recurrent_kernel"].shape[0]
  cell = {}
  for k, gate in enumerate(GATE_NAMES):
    columns = slice(k * hidden, (k + 1) * hidden)
    cell[f"i{gate}"] = {"kernel": params["kernel"][:, columns]}
    cell[f"h{gate}"] = {"kernel": params["recurrent_kernel"][:, columns], "bias": params["bias"][columns]}
  return {"params": {"cell": cell}}


def _run(cell_type, variables, xs, carry):
  """``nn.RNN(cell_type(H))`` over ``xs`` from ``carry``, in the inputs' dtype -> (final carry, outputs)."""
  cell = cell_type(
    carry[0].shape[-1] if isinstance(carry, tuple) else carry.shape[-1],
    dtype=xs.dtype,
    param_dtype=xs.dtype,
    # The parameters are always ours, but Flax evaluates the initialiser to check their shapes, and its
    # default (lecun_normal) divides by the fan-in: 0 for inputs of width 0.
    kernel_init=nn.initializers.zeros_init(),
  )
  # float32 products (the engine contract), also in the gradient: autodiff keeps a product's precision.
  with jax.default_matmul_precision("float32"):
    return nn.RNN(cell, return_carry=True).apply(variables, xs, initial_carry=carry)


def lstm(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
  """The LSTM engine signature (`seqclf.rnn.engines.scan.lstm`); the masks are all-true / all-one here."""
  del step_mask, input_dropout_mask, recurrent_dropout_mask
  (c, h), outputs = _run(nn.OptimizedLSTMCell, lstm_cell_params(params), xs, (c0, h0))
  return outputs, (h, c)


def gru_cell_params(params):
  """Our GRU's ``{kernel, recurrent_kernel, bias}`` as `nn.GRUCell`'s parameters."""
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
  """The GRU engine signature (`seqclf.rnn.engines.scan.gru`); the masks are all-true / all-one here."""
  del step_mask, input_dropout_mask, recurrent_dropout_mask
  h, outputs = _run(nn.GRUCell, gru_cell_params(params), xs, h0)
  return outputs, h

"""The public GRU interface: one pure function, several engines, the LSTM's conventions.

    from seqclf.lstm import gru, init_gru_params
    params = init_gru_params(jax.random.key(0), input_size=32, hidden_size=100)
    outputs, h = gru(params, xs)                     # xs [B, T, E] -> outputs [B, T, H], h [B, H]
    outputs, h = gru(params, xs, lengths=lengths)    # right-padded batch: padding leaves the state alone
    outputs, h = gru(params, xs, engine="scan")      # any name in seqclf.lstm.api.GRU_ENGINES, or "auto"

The cell is the one Keras 3 (``GRU(reset_after=True)``, its default) and PyTorch (``nn.GRU``) share:

    z = sigmoid(x W_z + b_z + h U_z + b'_z)          update gate
    r = sigmoid(x W_r + b_r + h U_r + b'_r)          reset gate
    n = tanh(x W_n + b_n + r * (h U_n + b'_n))       candidate; the reset gate scales h U_n + b'_n
    h_new = z * h + (1 - z) * n

Parameters with Keras' names and layout (`init_gru_params`, Keras' initialisation):
  ``kernel``           [E, 3H]  input weights W, gates in the order z, r, n
  ``recurrent_kernel`` [H, 3H]  recurrent weights U, same order
  ``bias``             [2, 3H]  input bias b (row 0) and recurrent bias b' (row 1)

Loading trained weights, one line each:
    params = seqclf.lstm.gru_from_keras(keras_gru.get_weights())   # keras.layers.GRU (reset_after=True)
    params = seqclf.lstm.gru_from_torch(torch_gru.state_dict())    # torch.nn.GRU, one layer (r, z, n)

Which engine can do what is data in `seqclf.lstm.api.GRU_ENGINES`, held against every call by
`seqclf.lstm.api.check_engine(..., cell="gru")`; an engine of the LSTM that has no GRU is refused naming
those that have one.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.errors import ConfigError
from seqclf.lstm import api, validation

GATES = 3


def gru(
  params,
  xs,
  *,
  initial_state=None,
  mask=None,
  lengths=None,
  input_dropout_mask=None,
  recurrent_dropout_mask=None,
  engine: str = "auto",
  matmul_precision: str = "float32",
  recurrent_activation: str = "sigmoid",
):
  """Runs a GRU layer over a batch of sequences.

  Args:
    params: ``{"kernel": [E, 3H], "recurrent_kernel": [H, 3H], "bias": [2, 3H]}`` (module docstring).
    xs: [B, T, E] inputs, batch-major.
    initial_state: optional ``h0`` [B, H]; zeros by default.
    mask: optional [B, T] bool; at a False step the state is left unchanged and the output repeats the
      previous ``h``, exactly as `seqclf.lstm.lstm` and Keras' masked GRU do (so left or right padding,
      or holes, are skipped exactly). PyTorch's packed sequences give zeros there instead:
      ``outputs * mask[..., None]`` turns one into the other.
    lengths: optional [B] ints in [0, T], shorthand for a right-padding mask; not together with ``mask``.
    input_dropout_mask: optional [B, E] multiplier of the input at every step (Keras' ``dropout``: one
      mask per sequence), already scaled by 1/(1 - rate). Treated as a constant.
    recurrent_dropout_mask: optional [B, H] multiplier of ``h`` before the recurrent matmul at every step
      (Keras' ``recurrent_dropout``; the carried ``z * h`` term keeps the undropped ``h``, as in Keras).
      Treated as a constant.
    engine: a name in `seqclf.lstm.api.GRU_ENGINES`, or "auto" for the fastest on the platform that can
      do the call.
    matmul_precision: of the step's products: "float32", or "bfloat16" where the engine lists it in its
      ``matmul_precisions`` (`cpu_kernel` on CPUs with AVX512-BF16).
    recurrent_activation: the update and reset gates' activation (Keras' name): "sigmoid" (default) or
      "hard_sigmoid" (Keras 1's clip(0.2 x + 0.5, 0, 1)), for engines that list it in their
      ``recurrent_activations``; the others refuse it.

  Returns:
    ``(outputs, h)``: outputs [B, T, H] and the final state [B, H].

  Raises:
    ConfigError: for inputs that do not fit the parameters (`seqclf.lstm.validation`), or a request the
      engine cannot honour (`seqclf.lstm.api.check_engine`).
  """
  validation.check_inputs(
    params,
    xs,
    gates=GATES,
    bias_rows=2,
    cell="gru",
    initial_state=None if initial_state is None else (initial_state,),
    state_names=("h0",),
    mask=mask,
    lengths=lengths,
    input_dropout_mask=input_dropout_mask,
    recurrent_dropout_mask=recurrent_dropout_mask,
  )
  hidden = params["recurrent_kernel"].shape[0]
  batch, steps, input_size = xs.shape
  dtype = xs.dtype
  arrays = [xs, *jax.tree.leaves(params), *jax.tree.leaves(initial_state)]
  name = api.check_engine(
    engine,
    masks="mask" if mask is not None else "lengths" if lengths is not None else None,
    input_dropout=input_dropout_mask is not None,
    recurrent_dropout=recurrent_dropout_mask is not None,
    dtypes=[jnp.result_type(a) for a in arrays],
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
    cell="gru",
  )
  if lengths is not None:
    mask = api.lengths_to_mask(lengths, steps)
  if mask is None:
    mask = jnp.ones((batch, steps), bool)
  h0 = initial_state if initial_state is not None else jnp.zeros((batch, hidden), dtype)
  if input_dropout_mask is None:
    input_dropout_mask = jnp.ones((batch, input_size), dtype)
  if recurrent_dropout_mask is None:
    recurrent_dropout_mask = jnp.ones((batch, hidden), dtype)
  options = {"matmul_precision": matmul_precision} if api.GRU_ENGINES[name].matmul_precisions else {}
  if api.GRU_ENGINES[name].recurrent_activations:
    options["recurrent_activation"] = recurrent_activation
  run = importlib.import_module(api.GRU_ENGINES[name].module).gru
  return run(params, xs, h0, mask.astype(bool), input_dropout_mask, recurrent_dropout_mask, **options)


def init_gru_params(key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras' GRU initialisation: glorot-uniform kernel, orthogonal recurrent kernel, zero biases."""
  k_in, k_rec = jax.random.split(key)
  return {
    "kernel": api.kernel_init(k_in, (input_size, GATES * hidden_size), dtype),
    "recurrent_kernel": api.recurrent_kernel_init(k_rec, (hidden_size, GATES * hidden_size), dtype),
    "bias": jnp.zeros((2, GATES * hidden_size), dtype),
  }


def from_keras(weights):
  """``keras.layers.GRU(reset_after=True).get_weights()`` ([kernel, recurrent_kernel, bias]) as params."""
  kernel, recurrent_kernel, bias = (jnp.asarray(w) for w in weights)
  if bias.ndim != 2:
    raise ConfigError(
      f"from_keras() takes a Keras GRU with reset_after=True (bias [2, 3H]); got a bias of shape {bias.shape}"
    )
  return {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}


def _numpy(tensor):
  detach = getattr(tensor, "detach", None)  # a torch.Tensor, without importing torch here
  return np.asarray(detach().cpu().numpy() if detach else tensor)


def from_torch(state_dict, layer: int = 0):
  """One layer of ``torch.nn.GRU(...).state_dict()`` as params: PyTorch stores W^T with gates r, z, n."""
  try:
    w_ih, w_hh, b_ih, b_hh = (
      _numpy(state_dict[f"{k}_l{layer}"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
  except KeyError as error:
    raise ConfigError(
      f"from_torch() needs an nn.GRU state_dict with biases (bias=True); {error.args[0]!r} is missing"
    ) from None
  hidden = w_hh.shape[1]
  order = np.concatenate(
    [np.arange(hidden, 2 * hidden), np.arange(hidden), np.arange(2 * hidden, 3 * hidden)]
  )
  return {
    "kernel": jnp.asarray(w_ih[order].T),
    "recurrent_kernel": jnp.asarray(w_hh[order].T),
    "bias": jnp.asarray(np.stack([b_ih[order], b_hh[order]])),
  }

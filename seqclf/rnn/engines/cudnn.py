"""The ``cudnn`` engine: NVIDIA's fused cuDNN LSTM through `jax.experimental.rnn` (GPU only, opt-in).

cuDNN runs the whole layer, forward and backward, in its own kernels (its kernel and its VJP);
`jax.experimental.rnn.lstm_ref` is the plain-JAX reference of the same computation (tests/test_cudnn.py
runs this wrapper on it). It covers less of the `seqclf.rnn.rnn` contract than the other engines, which
its `ENGINES` entry declares and `seqclf.rnn.engines.check_engine` enforces:

  * right padding only (``masks="lengths"``): ``step_mask`` is turned into sequence lengths by counting,
    so the api takes ``lengths=`` for this engine and refuses a ``mask=``, whose holes or left padding
    would give wrong results (under ``jit`` the mask is a traced value and cannot be checked).
  * no recurrent dropout (``recurrent_dropout=False``): cuDNN has no per-sequence mask on ``h``, so the
    ``recurrent_dropout_mask`` the api passes is all ones. ``input_dropout_mask`` is supported (it
    multiplies the inputs before cuDNN sees them).
  * float32 only (`jax.experimental.rnn` supports no other dtype).

On CPU `jax.experimental.rnn.lstm` has no fallback: it fails while tracing (its shape rule asks the
CUDA plugin for workspace sizes), which is why `seqclf.rnn.engines.ENGINES` lists this engine for "gpu" only.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn


def pack_weights(params):
  """Our parameters as `jax.experimental.rnn`'s flat cuDNN weight vector (one layer, one direction).

  The layout is W_ih [4H, E], W_hh [4H, H], b_ih [4H], b_hh [4H], each flattened row-major, with the
  gates in cuDNN's order i, f, g, o, which is ours. So W_ih and W_hh are our kernels transposed; cuDNN
  adds two biases, so ours goes into b_ih and b_hh is zero.
  """
  bias = params["bias"]
  return jnp.concatenate(
    [params["kernel"].T.ravel(), params["recurrent_kernel"].T.ravel(), bias, jnp.zeros_like(bias)]
  )


def lstm(
  params,
  xs,
  h0,
  c0,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  precision=jax.lax.Precision.HIGHEST,
):
  """Runs the LSTM with cuDNN; see `seqclf.rnn.lstm` for the contract and the module for limits.

  ``precision`` is that of cuDNN's matmuls: HIGHEST (default) keeps float32, HIGH allows TF32.
  ``recurrent_dropout_mask`` is all ones: the api refuses recurrent dropout for this engine.
  """
  del recurrent_dropout_mask
  _, _, input_size = xs.shape
  hidden = params["recurrent_kernel"].shape[0]
  lengths = jnp.sum(step_mask, axis=1, dtype=jnp.int32)
  xs = xs * jax.lax.stop_gradient(input_dropout_mask)[:, None, :]
  if input_size == 0:
    # cuDNN documents no inputs of width 0; one zero feature against a zero kernel row adds nothing.
    input_size = 1
    xs = jnp.zeros((*xs.shape[:2], input_size), xs.dtype)
    params = {**params, "kernel": jnp.zeros((input_size, 4 * hidden), params["kernel"].dtype)}
  # Zero lengths are clamped to one step whose results are then discarded: `rnn.lstm_ref` reads the
  # final state of an empty row from step -1, and cuDNN's support for empty rows is not documented.
  ys, h_n, c_n = rnn.lstm(
    xs,
    h0[None],
    c0[None],
    pack_weights(params),
    jnp.maximum(lengths, 1),
    input_size=input_size,
    hidden_size=hidden,
    num_layers=1,
    dropout=0.0,
    bidirectional=False,
    precision=precision,
  )
  empty = (lengths == 0)[:, None]
  h = jnp.where(empty, h0, h_n[0])
  c = jnp.where(empty, c0, c_n[0])
  # cuDNN leaves zeros past each row's length; our contract repeats the last h there.
  outputs = jnp.where(step_mask[:, :, None], ys, h[:, None, :])
  return outputs, (h, c)

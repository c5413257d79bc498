"""The ``cpu_kernel`` GRU engine: a whole GRU layer as multithreaded C++ kernels through XLA's FFI.

The LSTM's `cpu_kernel` (same library, `cpu_kernel.cc`, built and cached by `seqclf.lstm.cpu_kernel`)
around the GRU cell: one call runs the whole forward loop, one the whole backward loop, the batch rows
split over threads that each run the full time loop, masked (row, step) pairs skipped at no FLOPs. A step
is three register-blocked float32 products (x @ [W_z W_r W_n], h @ [U_z U_r], h @ U_n; r scales only the
last, so it stays apart) and one vectorised pass of gate arithmetic; the backward call returns every
gradient in the parameters' own layout. Results match ``scan`` to ~1e-6 (the exponential is a polynomial).

``matmul_precision="bfloat16"`` (opt-in, CPUs with AVX512-BF16; AMX tiles where granted) rounds the
operands of the step's products to bfloat16, as the LSTM's: x @ W and h @ U forward, dz @ W^T and dz @ U^T
backward, summed in float32. The weight gradient stays a float32 product (it runs once per block of steps,
not in the recurrence), as do the state and the gate arithmetic. Threads as for the LSTM
(``$SEQCLF_LSTM_THREADS``, else the cores this process may run on).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.lstm import cpu_kernel, gru_fused

LANES = 16  # cpu_kernel.cc's kLanes: each gate block of the stored gates is H rounded up to it


def unavailable_reason() -> str | None:
  """None when the kernel builds and loads here; otherwise why not (for ``engine="auto"``)."""
  return cpu_kernel.unavailable_reason()


def _call(target: str, out_shapes, *args, num_threads: int, bf16: bool):
  cpu_kernel._register()  # noqa: SLF001 -- the shared library and its targets, built once
  out_types = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in out_shapes]
  # vmap runs the kernel once per mapped element: it has no batch dimension beyond its own.
  return jax.ffi.ffi_call(target, out_types, vmap_method="sequential")(
    *args, num_threads=np.int64(num_threads), bf16=bf16
  )


def make_gru(num_threads: int | None = None, matmul_precision: str = "float32"):
  """A GRU with the engine signature of `seqclf.lstm.gru_scan.gru`, its rows split into ``num_threads``
  ranges (default `seqclf.lstm.cpu_kernel.default_num_threads()`), its step products in
  ``matmul_precision``."""
  cpu_kernel.check_precision(matmul_precision, cell="GRU")
  threads = num_threads or cpu_kernel.default_num_threads()
  bf16 = matmul_precision == "bfloat16"

  def arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    weights = (params["kernel"], params["recurrent_kernel"], params["bias"])
    return (xs, *weights, h0, step_mask, input_dropout_mask, recurrent_dropout_mask)

  def forward(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    batch, steps, _ = xs.shape
    hidden = h0.shape[1]
    gate_width = 4 * -(-hidden // LANES) * LANES
    hs, gates = _call(
      "seqclf_gru_forward",
      [(batch, steps, hidden), (batch, steps, gate_width)],
      *arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask),
      num_threads=threads,
      bf16=bf16,
    )
    residuals = (params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, gates)
    return (hs, hs[:, -1] if steps else h0), residuals

  def backward(residuals, cotangents):
    params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, hs, gates = residuals
    d_hs, dh_last = cotangents
    d_xs, dh0, d_kernel, d_recurrent_kernel, d_bias = _call(
      "seqclf_gru_backward",
      [xs.shape, h0.shape, params["kernel"].shape, params["recurrent_kernel"].shape, params["bias"].shape],
      xs,
      params["kernel"],
      params["recurrent_kernel"],
      h0,
      step_mask,
      input_dropout_mask,
      recurrent_dropout_mask,
      hs,
      gates,
      d_hs,
      dh_last,
      num_threads=threads,
      bf16=bf16,
    )
    return {"kernel": d_kernel, "recurrent_kernel": d_recurrent_kernel, "bias": d_bias}, d_xs, dh0

  def inference(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    (hs,) = _call(
      "seqclf_gru_inference",
      [(*xs.shape[:2], h0.shape[1])],
      *arguments(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask),
      num_threads=threads,
      bf16=bf16,
    )
    return hs, hs[:, -1] if xs.shape[1] else h0

  return gru_fused.custom_vjp_gru(inference, forward, backward)


_make_cached = functools.cache(make_gru)


def gru(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask, matmul_precision="float32"):
  """The engine-signature GRU (see `seqclf.lstm.gru_api.gru`), products in ``matmul_precision``."""
  return _make_cached(None, matmul_precision)(
    params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask
  )

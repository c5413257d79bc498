"""The ``pallas`` engine: each pass of the LSTM time loop is one Pallas GPU (Triton) kernel launch.

The grid runs over blocks of batch rows; a program owns all hidden units of its rows and runs the whole
time loop for them, so programs never synchronise. State, gate arithmetic and accumulation are float32;
``matmul_precision`` sets the recurrent matmul's operands ("float32", "BF16_BF16_F32_X6",
"tensorfloat32", "bfloat16"). H is padded per gate to a power of two >= 16 and the batch to the block
size; padded units keep a zero state and padded rows are masked. Off a GPU the kernels run in Pallas'
interpret mode. `make_reference` is the plain-JAX version of the same computation; the custom VJP around
both is `hoisted.make_lstm`'s. Design notes and precision figures: docs/kernels.md.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from seqclf.errors import ConfigError
from seqclf.rnn.engines import hoisted

GATES = 4
# The smallest block dim Triton's tl.dot accepts; the batch block and the padded hidden size start here.
MIN_BLOCK = 16
# Larger batch blocks would make the per-program state and gate blocks outgrow the registers.
MAX_BLOCK_BATCH = 64
# Streaming multiprocessors of an H100/H200: the batch block is the smallest that keeps the grid to one
# wave of programs, one per SM.
SM_COUNT = 132
# Above this size the recurrent kernel is re-read each step instead of being held on chip (see above).
# Compiled offline for sm_90 (Triton 3.9), a resident bfloat16 U at Hp = 128 (128 KiB) made the kernels
# use 140 KiB of shared memory, a resident float32 one at Hp = 128 (256 KiB) 272 KiB: over the limit.
RESIDENT_RECURRENT_KERNEL_MAX_BYTES = 128 * 1024
# The time loop is a serial recurrence: software pipelining (Triton's num_stages > 1) could only prefetch
# the next step's inputs, at the price of multiplying the shared memory the matmul operands take.
NUM_STAGES = 1

# matmul_precision -> (dtype of the recurrent matmul's operands, lax precision of the product).
# Triton maps HIGHEST on float32 to IEEE products and DEFAULT to TF32.
_MATMUL_PRECISIONS = {
  "float32": (jnp.float32, jax.lax.Precision.HIGHEST),
  "BF16_BF16_F32_X6": (jnp.float32, jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X6),
  "tensorfloat32": (jnp.float32, jax.lax.Precision.DEFAULT),
  "bfloat16": (jnp.bfloat16, jax.lax.Precision.DEFAULT),
}


# The values `lstm`'s ``matmul_precision`` takes (the engine's ``matmul_precisions`` in `seqclf.rnn.engines.ENGINES`).
PRECISIONS = tuple(_MATMUL_PRECISIONS)


def padded_hidden_size(hidden: int) -> int:
  """Hp: the per-gate block width for hidden size ``hidden`` (a power of two, at least 16)."""
  return max(MIN_BLOCK, pl.next_power_of_2(hidden))


def default_block_batch(batch: int) -> int:
  """Bb for a batch of ``batch`` rows: the smallest power of two >= 16 giving at most one program per SM.

  A step's latency is that of one [Bb, Hp] x [Hp, 4Hp] product and the gate arithmetic, nearly the same
  for any Bb at these sizes, so small blocks spread the batch over more SMs at no cost per step
  (B = 64: Bb = 16, four programs).
  """
  block = max(MIN_BLOCK, pl.next_power_of_2(pl.cdiv(batch, SM_COUNT)))
  return min(block, MAX_BLOCK_BATCH)


def default_num_warps(block_batch: int, padded_hidden: int) -> int:
  """Warps per program: 4 up to a [16, 32] state block, 8 above.

  Compiled offline for sm_90, Bb = 16 with Hp = 64 or 128 spilled registers with 4 warps and (but for
  the "float32" FMA matmul) not with 8.
  """
  return 4 if block_batch * padded_hidden <= 16 * 32 else 8


class _KernelSetup(NamedTuple):
  """The static choices for one call: block sizes, padding, precision and how to launch."""

  block_batch: int
  padded_batch: int
  padded_hidden: int
  operand_dtype: jnp.dtype
  precision: jax.lax.Precision | jax.lax.DotAlgorithmPreset
  resident_recurrent_kernel: bool
  compiler_params: plgpu.CompilerParams
  interpret: bool


def _pad_gates(x, hidden: int, padded_hidden: int):
  """[..., 4H] -> [..., 4Hp]: zero-pads each gate's block of units separately."""
  gates = x.reshape(*x.shape[:-1], GATES, hidden)
  return hoisted.pad_to(gates, (*gates.shape[:-1], padded_hidden)).reshape(
    *x.shape[:-1], GATES * padded_hidden
  )


def _unpad_gates(x, hidden: int, padded_hidden: int):
  """[..., 4Hp] -> [..., 4H]: the inverse of `_pad_gates`."""
  gates = x.reshape(*x.shape[:-1], GATES, padded_hidden)
  return gates[..., :hidden].reshape(*x.shape[:-1], GATES * hidden)


def _gate_slices(padded_hidden: int):
  """The static slices of the four gate blocks along a packed [.., 4Hp] axis."""
  return [pl.ds(gate * padded_hidden, padded_hidden) for gate in range(GATES)]


def _gate_block_reader(weights_ref, padded_hidden: int, axis: int, resident: bool):
  """Returns ``gate -> [Hp, Hp] block`` of a packed weight matrix, sliced along ``axis`` of the ref.

  Resident blocks are loaded once, here, before the time loop. Otherwise each block is loaded where it
  is used, right before its product, so that Triton can stage the four blocks through one shared-memory
  buffer in turn (loading all four first keeps four alive: 256 KiB for Hp = 128 in float32, over an
  H100/H200's 227 KiB).
  """

  def load(gate):
    block = pl.ds(gate * padded_hidden, padded_hidden)
    return weights_ref[:, block] if axis == 1 else weights_ref[block, :]

  if not resident:
    return load
  return [load(gate) for gate in range(GATES)].__getitem__


def _forward_kernel(
  xw_ref,
  keep_ref,
  recurrent_kernel_ref,
  h0_ref,
  c0_ref,
  recurrent_mask_ref,
  hs_ref,
  cs_ref,
  gates_ref,
  *,
  setup: _KernelSetup,
):
  """One batch block of `make_reference`'s forward, all time steps; refs are [T, Bb, ...] / [Bb, ...] blocks."""
  steps = xw_ref.shape[0]
  gate_slices = _gate_slices(setup.padded_hidden)
  recurrent_kernel = _gate_block_reader(
    recurrent_kernel_ref, setup.padded_hidden, axis=1, resident=setup.resident_recurrent_kernel
  )
  recurrent_mask = recurrent_mask_ref[...].astype(jnp.float32)

  def step(t, carry):
    h, c = carry
    h_masked = (h * recurrent_mask).astype(setup.operand_dtype)
    z = [
      xw_ref[t, :, gate].astype(jnp.float32)
      + jnp.dot(
        h_masked, recurrent_kernel(index), precision=setup.precision, preferred_element_type=jnp.float32
      )
      for index, gate in enumerate(gate_slices)
    ]
    i, f, g, o = jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jnp.tanh(z[2]), jax.nn.sigmoid(z[3])
    keep = keep_ref[t][:, None]
    c_new = jnp.where(keep, f * c + i * g, c)
    h_new = jnp.where(keep, o * jnp.tanh(c_new), h)
    hs_ref[t] = h_new.astype(hs_ref.dtype)
    cs_ref[t] = c_new.astype(cs_ref.dtype)
    for gate, activation in zip(gate_slices, (i, f, g, o)):
      gates_ref[t, :, gate] = activation.astype(gates_ref.dtype)
    return h_new, c_new

  initial = (h0_ref[...].astype(jnp.float32), c0_ref[...].astype(jnp.float32))
  jax.lax.fori_loop(0, steps, step, initial)


def _backward_kernel(
  recurrent_kernel_t_ref,
  gates_ref,
  cs_ref,
  c0_ref,
  keep_ref,
  recurrent_mask_ref,
  dhs_ref,
  dh_last_ref,
  dc_last_ref,
  dz_ref,
  dh0_ref,
  dc0_ref,
  *,
  setup: _KernelSetup,
):
  """One batch block of `make_reference`'s backward, all time steps in reverse.

  The cell gradient is `hoisted.lstm_cell_backward` written out gate by gate, because the Triton
  lowering cannot concatenate the gate blocks into its packed [Bb, 4Hp] vector.
  """
  steps = gates_ref.shape[0]
  gate_slices = _gate_slices(setup.padded_hidden)
  recurrent_kernel_t = _gate_block_reader(
    recurrent_kernel_t_ref, setup.padded_hidden, axis=0, resident=setup.resident_recurrent_kernel
  )
  recurrent_mask = recurrent_mask_ref[...].astype(jnp.float32)
  c0 = c0_ref[...].astype(jnp.float32)

  # Triton lowers only forward loops, so the loop counts up and the step index counts down.
  def step(reverse_index, carry):
    t = steps - 1 - reverse_index
    dh_next, dc_next = carry
    dh = dh_next + dhs_ref[t].astype(jnp.float32)
    i, f, g, o = [gates_ref[t, :, gate].astype(jnp.float32) for gate in gate_slices]
    c = cs_ref[t].astype(jnp.float32)
    c_prev = jnp.where(t > 0, cs_ref[jnp.maximum(t - 1, 0)].astype(jnp.float32), c0)
    tanh_c = jnp.tanh(c)
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
    keep = keep_ref[t][:, None]
    dz = [
      jnp.where(keep, dz_gate, 0.0)
      for dz_gate in (
        dc * g * i * (1.0 - i),
        dc * c_prev * f * (1.0 - f),
        dc * i * (1.0 - g * g),
        dh * tanh_c * o * (1.0 - o),
      )
    ]
    dh_recurrent = functools.reduce(
      jnp.add,
      [
        jnp.dot(
          dz_gate.astype(setup.operand_dtype),
          recurrent_kernel_t(index),
          precision=setup.precision,
          preferred_element_type=jnp.float32,
        )
        for index, dz_gate in enumerate(dz)
      ],
    )
    # A masked step passed the state through unchanged, so its cotangents pass through too.
    dh_prev = jnp.where(keep, dh_recurrent * recurrent_mask, dh)
    dc_prev = jnp.where(keep, dc * f, dc_next)
    for gate, dz_gate in zip(gate_slices, dz):
      dz_ref[t, :, gate] = dz_gate.astype(dz_ref.dtype)
    return dh_prev, dc_prev

  initial = (dh_last_ref[...].astype(jnp.float32), dc_last_ref[...].astype(jnp.float32))
  dh0, dc0 = jax.lax.fori_loop(0, steps, step, initial)
  dh0_ref[...] = dh0.astype(dh0_ref.dtype)
  dc0_ref[...] = dc0.astype(dc0_ref.dtype)


def _time_block(steps: int, block_batch: int, width: int):
  """The [T, Bb, width] block of a time-major array that batch block ``b`` owns."""
  return pl.BlockSpec((steps, block_batch, width), lambda b: (0, b, 0))


def _batch_block(block_batch: int, width: int):
  """The [Bb, width] block of a [B, width] array that batch block ``b`` owns."""
  return pl.BlockSpec((block_batch, width), lambda b: (b, 0))


def _mask_block(steps: int, block_batch: int):
  """The [T, Bb] block of the step mask that batch block ``b`` owns."""
  return pl.BlockSpec((steps, block_batch), lambda b: (0, b))


def _whole(shape):
  """The whole array, the same for every program."""
  return pl.BlockSpec(shape, lambda b: (0,) * len(shape))


def _launch(kernel, name: str, setup: _KernelSetup, inputs, outputs):
  """Runs ``kernel`` once per batch block; ``inputs``/``outputs`` are (array or shape, BlockSpec) pairs."""
  operands, in_specs = zip(*inputs)
  out_shape, out_specs = zip(*outputs)
  return pl.pallas_call(
    functools.partial(kernel, setup=setup),
    out_shape=out_shape,
    grid=(setup.padded_batch // setup.block_batch,),
    in_specs=in_specs,
    out_specs=out_specs,
    compiler_params=setup.compiler_params,
    interpret=setup.interpret,
    name=name,
  )(*operands)


def make_recurrence(
  matmul_precision: str = "float32",
  *,
  block_batch: int | None = None,
  num_warps: int | None = None,
  num_stages: int = NUM_STAGES,
  resident_recurrent_kernel: bool | None = None,
  interpret: bool | None = None,
) -> hoisted.Recurrence:
  """Builds the Pallas `hoisted.Recurrence`; ``hoisted.make_lstm`` turns it into an engine function.

  Args:
    matmul_precision: "float32", "BF16_BF16_F32_X6", "tensorfloat32" or "bfloat16": the precision of
      the recurrent matmul's products (see the module docstring for the error to expect); the state
      and the gate arithmetic stay float32.
    block_batch: batch rows per program, a power of two >= 16; default `default_block_batch`.
    num_warps: Triton warps per program; default `default_num_warps`.
    num_stages: Triton software-pipelining stages; see `NUM_STAGES`.
    resident_recurrent_kernel: hold U on chip for the whole loop (True) or re-read it every step
      (False); default: held when it takes at most `RESIDENT_RECURRENT_KERNEL_MAX_BYTES`.
    interpret: run in Pallas' interpret mode; default: off a GPU only (decided when tracing).

  Returns:
    The forward and backward loops with the `hoisted.Recurrence` contract.
  """
  if matmul_precision not in _MATMUL_PRECISIONS:
    raise ConfigError(
      f"unknown matmul_precision {matmul_precision!r} for the pallas LSTM engine; "
      f"choose one of: {', '.join(_MATMUL_PRECISIONS)}"
    )
  if block_batch is not None and (block_batch < MIN_BLOCK or block_batch != pl.next_power_of_2(block_batch)):
    raise ConfigError(f"block_batch must be a power of two >= {MIN_BLOCK}, got {block_batch}")
  operand_dtype, precision = _MATMUL_PRECISIONS[matmul_precision]

  def setup_for(batch: int, hidden: int) -> _KernelSetup:
    rows = block_batch or default_block_batch(batch)
    padded_hidden = padded_hidden_size(hidden)
    kernel_bytes = padded_hidden * GATES * padded_hidden * jnp.dtype(operand_dtype).itemsize
    resident = (
      kernel_bytes <= RESIDENT_RECURRENT_KERNEL_MAX_BYTES
      if resident_recurrent_kernel is None
      else resident_recurrent_kernel
    )
    return _KernelSetup(
      block_batch=rows,
      padded_batch=pl.cdiv(batch, rows) * rows,
      padded_hidden=padded_hidden,
      operand_dtype=operand_dtype,
      precision=precision,
      resident_recurrent_kernel=resident,
      compiler_params=plgpu.CompilerParams(
        num_warps=num_warps or default_num_warps(rows, padded_hidden), num_stages=num_stages
      ),
      interpret=hoisted.interpret() if interpret is None else interpret,
    )

  def forward(xw, recurrent_kernel, h0, c0, step_mask, recurrent_dropout_mask):
    steps, batch, _ = xw.shape
    hidden = recurrent_kernel.shape[0]
    setup = setup_for(batch, hidden)
    rows, width, block = setup.padded_batch, setup.padded_hidden, setup.block_batch
    state = functools.partial(hoisted.pad_to, shape=(rows, width))
    hs, cs, gates = _launch(
      _forward_kernel,
      "lstm_forward",
      setup,
      inputs=[
        (
          hoisted.pad_to(_pad_gates(xw, hidden, width), (steps, rows, GATES * width)),
          _time_block(steps, block, GATES * width),
        ),
        (hoisted.pad_to(step_mask, (steps, rows)), _mask_block(steps, block)),
        (
          hoisted.pad_to(_pad_gates(recurrent_kernel, hidden, width), (width, GATES * width)).astype(
            setup.operand_dtype
          ),
          _whole((width, GATES * width)),
        ),
        (state(h0), _batch_block(block, width)),
        (state(c0), _batch_block(block, width)),
        (state(recurrent_dropout_mask), _batch_block(block, width)),
      ],
      outputs=[
        (jax.ShapeDtypeStruct((steps, rows, width), xw.dtype), _time_block(steps, block, width)),
        (jax.ShapeDtypeStruct((steps, rows, width), xw.dtype), _time_block(steps, block, width)),
        (
          jax.ShapeDtypeStruct((steps, rows, GATES * width), xw.dtype),
          _time_block(steps, block, GATES * width),
        ),
      ],
    )
    return (hs[:, :batch, :hidden], cs[:, :batch, :hidden], _unpad_gates(gates[:, :batch], hidden, width))

  def backward(recurrent_kernel, gates, cs, c0, step_mask, recurrent_dropout_mask, dhs, dh_last, dc_last):
    steps, batch, hidden = cs.shape
    setup = setup_for(batch, hidden)
    rows, width, block = setup.padded_batch, setup.padded_hidden, setup.block_batch
    state = functools.partial(hoisted.pad_to, shape=(rows, width))
    state_sequence = functools.partial(hoisted.pad_to, shape=(steps, rows, width))
    kernel_t = hoisted.pad_to(_pad_gates(recurrent_kernel, hidden, width), (width, GATES * width)).T
    dz, dh0, dc0 = _launch(
      _backward_kernel,
      "lstm_backward",
      setup,
      inputs=[
        (kernel_t.astype(setup.operand_dtype), _whole((GATES * width, width))),
        (
          hoisted.pad_to(_pad_gates(gates, hidden, width), (steps, rows, GATES * width)),
          _time_block(steps, block, GATES * width),
        ),
        (state_sequence(cs), _time_block(steps, block, width)),
        (state(c0), _batch_block(block, width)),
        (hoisted.pad_to(step_mask, (steps, rows)), _mask_block(steps, block)),
        (state(recurrent_dropout_mask), _batch_block(block, width)),
        (state_sequence(dhs), _time_block(steps, block, width)),
        (state(dh_last), _batch_block(block, width)),
        (state(dc_last), _batch_block(block, width)),
      ],
      outputs=[
        (
          jax.ShapeDtypeStruct((steps, rows, GATES * width), gates.dtype),
          _time_block(steps, block, GATES * width),
        ),
        (jax.ShapeDtypeStruct((rows, width), dh_last.dtype), _batch_block(block, width)),
        (jax.ShapeDtypeStruct((rows, width), dc_last.dtype), _batch_block(block, width)),
      ],
    )
    return _unpad_gates(dz[:, :batch], hidden, width), dh0[:batch, :hidden], dc0[:batch, :hidden]

  return hoisted.Recurrence(forward=forward, backward=backward)


def make_reference(matmul_precision: str = "float32") -> hoisted.Recurrence:
  """The plain-JAX version of the kernels' computation, a `hoisted.Recurrence` too.

  Same recurrence, same precision (the recurrent matmul's operands rounded to the same dtype, float32
  accumulation) and float32 state, written as `lax.scan`s over the packed [B, 4H] gates: no padding, no
  batch blocks, no per-gate products. On CPU it matches the interpreted kernels to float32 summation order
  at every precision.
  """
  operand_dtype, precision = _MATMUL_PRECISIONS[matmul_precision]

  def product(a, b):
    return jnp.matmul(
      a.astype(operand_dtype),
      b.astype(operand_dtype),
      precision=precision,
      preferred_element_type=jnp.float32,
    )

  return hoisted.scan_recurrence(product, state_dtype=jnp.float32)


@functools.cache
def _lstm_for(matmul_precision: str):
  return hoisted.make_lstm(make_recurrence(matmul_precision))


def lstm(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, matmul_precision="float32"
):
  """The engine: the kernels inside `hoisted`'s custom VJP; see `seqclf.rnn.lstm` for the contract."""
  run = _lstm_for(matmul_precision)
  return run(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)


RECURRENCE = make_recurrence()
REFERENCE = make_reference()

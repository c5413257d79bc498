"""The ``mosaic`` engine: the LSTM time loop as one Pallas Mosaic GPU kernel per pass, spread over a cluster.

Each 64-row batch block is shared by a cluster of N CTAs (`CLUSTER_SIZES`); CTA j owns 1/N of the hidden
units of all four gates, keeps its slice of U in shared memory for the whole loop, runs the step's
matmul on Hopper's tensor cores (``wgmma``) and exchanges its h (forward) or dz (backward) slice with
the other CTAs every step, through distributed shared memory on a GPU ("dsmem") or global memory in the
interpreter ("gmem"). ``matmul_precision``: "float32" (= "BF16_BF16_F32_X3", three bf16 products, N >= 4)
or "bfloat16". Off a GPU the kernels run in the Mosaic GPU interpreter (N <= 2). `make_reference` rounds
like the kernels; input projection, weight gradients and the custom VJP come from `hoisted.py`.
Design, precision figures and the per-step cost model: docs/kernels.md.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.lstm import hoisted

GATES = 4
# wgmma's M: the batch rows of one cluster.
BLOCK_BATCH = 64
# Hidden units are padded to this (H = 100 -> 128); the cluster splits them evenly.
PADDED_HIDDEN = 128
# Cluster sizes the kernels are built for (see the module docstring for why not 16).
CLUSTER_SIZES = (1, 2, 4, 8)
DEFAULT_CLUSTER_SIZE = 8
# The interpreter runs each CTA of a cluster as a host thread that blocks in barrier waits; with more CTAs
# than that (N = 4 on a 2-core host) it hung, so interpreted kernels default to 2.
INTERPRET_CLUSTER_SIZE = 2
# Threads of a warpgroup: `async_store_smem` arrives on the receiver's barrier once per thread.
WARPGROUP_THREADS = 128
EXCHANGES = ("dsmem", "gmem")
# matmul_precision -> number of bf16 pieces per operand (hi, or hi and lo). Hopper's tensor cores have no
# float32 products, so "float32" (the api's default) is computed as BF16_BF16_F32_X3, to float32 level.
_PIECES = {"float32": 2, "BF16_BF16_F32_X3": 2, "bfloat16": 1}
# The values `lstm`'s ``matmul_precision`` takes (the engine's ``matmul_precisions`` in `seqclf.lstm.api`).
MATMUL_PRECISIONS = tuple(_PIECES)
# Forward outputs per step: h, c and the four gates.
_FORWARD_OUT_PLANES = 2 + GATES
# A CTA's shared memory on an H100/H200 (227 KiB), less a margin for barriers and Mosaic's own use.
SMEM_BUDGET_BYTES = 227 * 1024 - 1024


# A Hopper device's compute capability as jax gives it (the kernels' wgmma is sm_90a only).
HOPPER_CAPABILITY = "9.0"


def unavailable_reason() -> str | None:
  """Why the engine cannot run here: too old a jax, or a GPU other than Hopper; None if it can."""
  if not hasattr(plgpu, "InterpretGPUParams"):  # jax 0.10 has parts of Mosaic GPU, not these
    return f"the mosaic LSTM engine needs jax >= 0.11 (Pallas Mosaic GPU); this is jax {jax.__version__}"
  if lowering.target_platform() == "gpu":
    capability = (
      getattr(jax.devices("gpu")[0], "compute_capability", None) if jax.default_backend() == "gpu" else None
    )
    # wgmma exists on sm_90(a) only: Blackwell (10.x, 12.x) has other tensor-core instructions.
    if capability is not None and str(capability) != HOPPER_CAPABILITY:
      return (
        f"the mosaic LSTM engine needs a Hopper GPU (H100/H200, compute capability 9.0), not compute "
        f"capability {capability}; use engine='pallas' or 'auto'"
      )
  return None


class _Setup(NamedTuple):
  """The static choices of one kernel call."""

  cluster_size: int
  pieces: int  # bf16 pieces per operand: 1 (bfloat16) or 2 (hi, lo)
  exchange: str  # "local" (N = 1), "dsmem" or "gmem"
  interpret: bool

  @property
  def slice_width(self) -> int:
    return PADDED_HIDDEN // self.cluster_size


def _bf16_pieces(x, pieces: int):
  """x (f32) -> [hi] or [hi, lo] in bfloat16, hi + lo = x to ~2^-16 relative."""
  hi = x.astype(jnp.bfloat16)
  if pieces == 1:
    return [hi]
  return [hi, (x - hi.astype(jnp.float32)).astype(jnp.bfloat16)]


def _products(pieces: int):
  """(operand piece, weight piece) pairs summed per matmul: hi*hi, plus lo*hi and hi*lo for X3."""
  return [(0, 0)] if pieces == 1 else [(0, 0), (1, 0), (0, 1)]


def _weight_bytes(cluster_size: int, pieces: int) -> int:
  """Shared memory of one CTA's slice of U (or U^T): pieces x [4, Hp, Hs] bf16."""
  return pieces * GATES * PADDED_HIDDEN * (PADDED_HIDDEN // cluster_size) * 2


def _operand_bytes(pieces: int, operands: int) -> int:
  """Shared memory of one slot of the exchanged operand: pieces x operands x [64, Hp] bf16."""
  return pieces * operands * BLOCK_BATCH * PADDED_HIDDEN * 2


def exchange_slots(cluster_size: int, pieces: int, operands: int) -> int:
  """Slots of the exchange buffer: 2 (double buffer, no second barrier) if they fit, else 1, else 0."""
  weights = _weight_bytes(cluster_size, pieces)
  for slots in (2, 1):
    if weights + slots * _operand_bytes(pieces, operands) <= SMEM_BUDGET_BYTES:
      return slots
  return 0


def _tiled(width: int):
  """The SMEM tiling and swizzle of a bf16 wgmma operand whose column blocks are ``width`` wide."""
  swizzle = min(128, width * 2)
  return (plgpu.TilingTransform((8, swizzle // 2)), plgpu.SwizzleTransform(swizzle))


def _load(ref):
  """A [64, Hs] f32 plane from global memory into registers, in the wgmma accumulator's layout."""
  # jax 0.11.2 refuses the default optimized=True for a load from global memory ("Only optimized
  # transfers to SMEM supported"); the plain lowering is what it has.
  return plgpu.load(ref, layout=plgpu.Layout.WGMMA, optimized=False)


def _gate_matmul(setup: _Setup, operand_buffer, weights_smem, gates):
  """Sums of operand[gate] @ weights[gate] ([64, Hp] x [Hp, Hs] each) in f32, one per entry of ``gates``.

  ``operand_buffer(piece, gate)`` is the [64, Hp] bf16 SMEM operand; ``gates`` lists, per accumulator,
  the gates summed into it. Every wgmma is issued before the one wait.
  """
  shape = (BLOCK_BATCH, setup.slice_width)

  def run(*accumulators):
    for accumulator, summed in zip(accumulators, gates):
      for gate in summed:
        for piece, weight_piece in _products(setup.pieces):
          plgpu.wgmma(accumulator, operand_buffer(piece, gate), weights_smem.at[weight_piece * GATES + gate])
    plgpu.wgmma_wait(0)
    return [accumulator[...] for accumulator in accumulators]

  return pl.run_scoped(run, *[plgpu.ACC(shape, jnp.float32) for _ in gates])


class _Exchange:
  """Sends a CTA's [64, Hs] slices of K [64, Hp] operands to every CTA of the cluster and waits for all.

  ``buffer`` [slots, pieces * K, 64, Hp] bf16 SMEM (piece-major; TMA copies take at most 5 strided
  dims); K = 1 forward (h), 4 backward (dz of each gate).
  """

  def __init__(self, setup, slots, buffer, ready, staging, exchange_gmem, gmem_barriers, cluster_barrier):
    self.setup, self.slots, self.buffer, self.ready = setup, slots, buffer, ready
    self.staging, self.exchange_gmem = staging, exchange_gmem
    self.gmem_barriers, self.cluster_barrier = gmem_barriers, cluster_barrier

  def slot(self, index):
    """The buffer slot that holds the operands of step ``index``."""
    return index % self.slots

  def send(self, index, operands, block, cta):
    """Writes ``operands`` (K arrays [64, Hs] f32) of CTA ``cta`` for step ``index`` into every CTA."""
    slot = self.slot(index)
    setup = self.setup
    width = setup.slice_width
    pieces = [_bf16_pieces(operand, setup.pieces) for operand in operands]
    if setup.exchange == "local":
      for operand, operand_pieces in enumerate(pieces):
        for piece, value in enumerate(operand_pieces):
          self.buffer[slot, piece * len(operands) + operand] = value
      # Order the stores before the tensor cores' (async proxy) reads.
      plgpu.commit_smem()
      return
    if setup.exchange == "dsmem":
      # Every CTA's buffer gets this CTA's columns; each store arrives on that CTA's barrier (once per
      # thread: `WARPGROUP_THREADS`).
      columns = pl.ds(pl.multiple_of(cta * width, width), width)
      for target in range(setup.cluster_size):
        for operand, operand_pieces in enumerate(pieces):
          for piece, value in enumerate(operand_pieces):
            plgpu.async_store_smem(
              value,
              self.buffer.at[slot, piece * len(operands) + operand, :, columns],
              self.ready.at[slot],
              cluster_idx=target,
              cluster_dim="cluster",
            )

      plgpu.barrier_wait(self.ready.at[slot])
      plgpu.commit_smem()
      return
    # "gmem": stage, store to global memory, cluster barrier, then every CTA copies all slices in. The
    # global copy has two slots whatever the SMEM buffer has: a CTA rewrites one two steps on, after
    # the barrier of the next step, which every CTA reaches only after reading it.
    for operand, operand_pieces in enumerate(pieces):
      for piece, value in enumerate(operand_pieces):
        self.staging[piece, operand] = value
    plgpu.commit_smem()
    gmem_slot = index % 2
    plgpu.copy_smem_to_gmem(self.staging, self.exchange_gmem.at[block, gmem_slot, cta])
    plgpu.wait_smem_to_gmem(0)
    plgpu.barrier_arrive(self.cluster_barrier)
    plgpu.barrier_wait(self.cluster_barrier)
    for owner in range(setup.cluster_size):
      for piece in range(setup.pieces):
        for operand in range(len(operands)):
          plgpu.copy_gmem_to_smem(
            self.exchange_gmem.at[block, gmem_slot, owner, piece, operand],
            self.buffer.at[slot, piece * len(operands) + operand, :, pl.ds(owner * width, width)],
            self.gmem_barriers.at[owner],
          )
    for owner in range(setup.cluster_size):
      plgpu.barrier_wait(self.gmem_barriers.at[owner])

  def release(self):
    """After the step's matmul: with one slot, no CTA may overwrite the buffer before all have read it."""
    if self.slots == 1 and self.setup.exchange == "dsmem":
      plgpu.barrier_arrive(self.cluster_barrier)
      plgpu.barrier_wait(self.cluster_barrier)


def _kernel_scratch(setup: _Setup, slots: int, operands: int):
  """The kernels' scratch, in argument order: weights, exchange buffer and its barriers, staging."""
  width = setup.slice_width
  arrivals = WARPGROUP_THREADS * setup.cluster_size * setup.pieces * operands
  return [
    plgpu.SMEM((setup.pieces * GATES, PADDED_HIDDEN, width), jnp.bfloat16, transforms=_tiled(width)),
    plgpu.SMEM(
      (slots, setup.pieces * operands, BLOCK_BATCH, PADDED_HIDDEN), jnp.bfloat16, transforms=_tiled(width)
    ),
    plgpu.Barrier(num_barriers=slots, num_arrivals=arrivals),
    # The "gmem" exchange's staging buffer and copy barriers (empty otherwise).
    [plgpu.SMEM((setup.pieces, operands, BLOCK_BATCH, width), jnp.bfloat16)]
    if setup.exchange == "gmem"
    else [],
    [plgpu.Barrier(num_barriers=setup.cluster_size, num_arrivals=setup.pieces * operands)]
    if setup.exchange == "gmem"
    else [],
    plgpu.ClusterBarrier(collective_axes=("cluster",)),
    plgpu.Barrier(),  # the one-off copies: weights, initial operand
  ]


def _prologue(setup, slots, weights_gmem, scratch, exchange_gmem):
  """Loads the CTA's weight slice; returns (block, cta, exchange, weights_smem, buffer, once)."""
  weights_smem, buffer, ready, staging, gmem_barriers, cluster_barrier, once = scratch
  staging, gmem_barriers = (staging[0], gmem_barriers[0]) if setup.exchange == "gmem" else (None, None)
  block, cta = jax.lax.axis_index("batch"), jax.lax.axis_index("cluster")
  plgpu.copy_gmem_to_smem(weights_gmem.at[cta], weights_smem, once)
  plgpu.barrier_wait(once)
  if setup.exchange == "dsmem":
    # Every CTA's barriers exist before anyone stores into its shared memory.
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)
  exchange = _Exchange(setup, slots, buffer, ready, staging, exchange_gmem, gmem_barriers, cluster_barrier)
  return block, cta, exchange, weights_smem, buffer, once


def _time_loop(steps_gmem, outputs_gmem, block, cta, body, init, reverse: bool):
  """Runs ``body(index, inputs, carry) -> (outputs, carry)`` over the steps, returns the last carry.

  A step's input planes ([64, Hs] f32 each) are loaded from global memory into registers one step
  ahead (they travel in the loop carry, so their latency hides behind the step before); its output
  planes are stored straight from registers.
  """
  steps, planes = steps_gmem.shape[1], steps_gmem.shape[3]

  def time_of(index):
    return steps - 1 - index if reverse else index

  def load_step(index):
    return [_load(steps_gmem.at[block, time_of(index), cta, plane]) for plane in range(planes)]

  def step(index, carry):
    inputs, state = carry
    next_inputs = load_step(jnp.minimum(index + 1, steps - 1))
    outputs, state = body(index, inputs, state)
    t = time_of(index)
    for plane, value in enumerate(outputs):
      outputs_gmem[block, t, cta, plane] = value
    return next_inputs, state

  _, state = jax.lax.fori_loop(0, steps, step, (load_step(0), init))
  return state


def _forward_kernel(
  steps_gmem, state_gmem, h_init_gmem, weights_gmem, outputs_gmem, exchange_gmem, *scratch, setup, slots
):
  """One cluster's batch block of `hoisted.scan_recurrence`'s forward (see the module docstring)."""
  block, cta, exchange, weights_smem, h_buffer, once = _prologue(
    setup, slots, weights_gmem, scratch, exchange_gmem
  )
  steps = steps_gmem.shape[1]
  plgpu.copy_gmem_to_smem(h_init_gmem.at[block], h_buffer.at[0], once)
  plgpu.barrier_wait(once)
  h0, c0, recurrent_mask = [_load(state_gmem.at[block, cta, plane]) for plane in range(3)]

  def body(index, inputs, carry):
    h, c = carry
    xw, keep = inputs[:GATES], inputs[GATES] > 0.5
    slot = exchange.slot(index)
    products = _gate_matmul(
      setup, lambda piece, gate: h_buffer.at[slot, piece], weights_smem, [[gate] for gate in range(GATES)]
    )
    exchange.release()
    z = [x + p for x, p in zip(xw, products)]
    i, f, g, o = jax.nn.sigmoid(z[0]), jax.nn.sigmoid(z[1]), jnp.tanh(z[2]), jax.nn.sigmoid(z[3])
    c_new = jnp.where(keep, f * c + i * g, c)
    h_new = jnp.where(keep, o * jnp.tanh(c_new), h)

    @pl.when(index + 1 < steps)
    def _send():
      exchange.send(index + 1, [h_new * recurrent_mask], block, cta)

    return [h_new, c_new, i, f, g, o], (h_new, c_new)

  _time_loop(steps_gmem, outputs_gmem, block, cta, body, (h0, c0), reverse=False)


def _backward_kernel(
  steps_gmem, state_gmem, weights_gmem, outputs_gmem, final_gmem, exchange_gmem, *scratch, setup, slots
):
  """One cluster's batch block of `hoisted.scan_recurrence`'s backward, steps in reverse (see the module docstring)."""
  block, cta, exchange, weights_smem, dz_buffer, _ = _prologue(
    setup, slots, weights_gmem, scratch, exchange_gmem
  )
  dh_last, dc_last, recurrent_mask = [_load(state_gmem.at[block, cta, plane]) for plane in range(3)]

  def body(index, inputs, carry):
    dh_next, dc_next = carry
    dh_out, i, f, g, o, c, c_prev, keep = inputs
    keep = keep > 0.5
    dh = dh_next + dh_out
    tanh_c = jnp.tanh(c)
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
    dz = [
      jnp.where(keep, dz_gate, 0.0)
      for dz_gate in (
        dc * g * i * (1.0 - i),
        dc * c_prev * f * (1.0 - f),
        dc * i * (1.0 - g * g),
        dh * tanh_c * o * (1.0 - o),
      )
    ]
    exchange.send(index, dz, block, cta)
    slot = exchange.slot(index)
    (dh_recurrent,) = _gate_matmul(
      setup, lambda piece, gate: dz_buffer.at[slot, piece * GATES + gate], weights_smem, [list(range(GATES))]
    )
    exchange.release()
    # A masked step passed the state through unchanged, so its cotangents pass through too.
    dh_prev = jnp.where(keep, dh_recurrent * recurrent_mask, dh)
    dc_prev = jnp.where(keep, dc * f, dc_next)
    return dz, (dh_prev, dc_prev)

  dh0, dc0 = _time_loop(steps_gmem, outputs_gmem, block, cta, body, (dh_last, dc_last), reverse=True)
  final_gmem[block, cta, 0] = dh0
  final_gmem[block, cta, 1] = dc0


def _blocks(x, cluster_size: int):
  """[T, B, X, H] (time-major planes of hidden units) -> [nb, T, N, X, 64, Hs], the kernels' step layout."""
  steps, batch, planes, hidden = x.shape
  padded_batch = pl.cdiv(batch, BLOCK_BATCH) * BLOCK_BATCH
  x = hoisted.pad_to(x, (steps, padded_batch, planes, PADDED_HIDDEN))
  x = x.reshape(steps, padded_batch // BLOCK_BATCH, BLOCK_BATCH, planes, cluster_size, -1)
  return x.transpose(1, 0, 4, 3, 2, 5)


def _unblock(x, batch: int, hidden: int):
  """The inverse of `_blocks`, cropped: [nb, T, N, X, 64, Hs] -> [T, B, X, H]."""
  blocks, steps, cluster_size, planes, rows, width = x.shape
  x = x.transpose(1, 0, 4, 3, 2, 5).reshape(steps, blocks * rows, planes, cluster_size * width)
  return x[:, :batch, :, :hidden]


def _gate_planes(x, hidden: int):
  """[..., 4H] -> [..., 4, H]."""
  return x.reshape(*x.shape[:-1], GATES, hidden)


def _weights(recurrent_kernel, setup: _Setup, transposed: bool):
  """U [H, 4H] -> the per-CTA slices [N, pieces * 4, Hp, Hs] in bf16 pieces (piece-major).

  Forward: slice [j, :, g] = U[:, gate g, units of CTA j] (rows: all h units). Backward: the U^T slice,
  [j, :, g][k, n] = U[unit n of CTA j, gate g unit k].
  """
  hidden = recurrent_kernel.shape[0]
  u = hoisted.pad_to(
    _gate_planes(recurrent_kernel, hidden), (PADDED_HIDDEN, GATES, PADDED_HIDDEN)
  )  # [m, g, k]
  if transposed:
    u = u.reshape(setup.cluster_size, setup.slice_width, GATES, PADDED_HIDDEN).transpose(0, 2, 3, 1)
  else:
    u = u.reshape(PADDED_HIDDEN, GATES, setup.cluster_size, setup.slice_width).transpose(2, 1, 0, 3)
  pieces = jnp.stack(_bf16_pieces(u.astype(jnp.float32), setup.pieces), axis=1)
  return pieces.reshape(setup.cluster_size, setup.pieces * GATES, PADDED_HIDDEN, setup.slice_width)


def _state(arrays, setup: _Setup):
  """[B, H] arrays -> [nb, N, len(arrays), 64, Hs]."""
  return _blocks(jnp.stack(arrays, axis=1)[None], setup.cluster_size)[:, 0]


def _launch(kernel, setup: _Setup, blocks: int, out_types, operands: int, *args):
  """Runs ``kernel`` on a grid of ``blocks`` clusters of N CTAs; returns its outputs but the exchange's.

  ``operands``: how many [64, Hp] operands the cluster exchanges per step (1 forward, 4 backward).
  """
  exchange_type = jax.ShapeDtypeStruct(
    (blocks, 2, setup.cluster_size, setup.pieces, operands, BLOCK_BATCH, setup.slice_width), jnp.bfloat16
  )
  # 0 slots (over the GPU's limit) only reaches here interpreted, where shared memory is unlimited.
  slots = exchange_slots(setup.cluster_size, setup.pieces, operands) or 1
  call = plgpu.kernel(
    functools.partial(kernel, setup=setup, slots=slots),
    out_type=(*out_types, exchange_type),
    scratch_types=_kernel_scratch(setup, slots, operands),
    grid=(blocks,),
    grid_names=("batch",),
    cluster=(setup.cluster_size,),
    cluster_names=("cluster",),
    interpret=plgpu.InterpretGPUParams() if setup.interpret else None,
  )
  return call(*args)[:-1]


def fits(cluster_size: int, matmul_precision: str) -> bool:
  """Whether both kernels of this configuration fit in a CTA's shared memory."""
  pieces = _PIECES[matmul_precision]
  return all(exchange_slots(cluster_size, pieces, operands) > 0 for operands in (1, GATES))


def make_recurrence(
  matmul_precision: str = "float32",
  *,
  cluster_size: int | None = None,
  exchange: str | None = None,
  interpret: bool | None = None,
) -> hoisted.Recurrence:
  """Builds the Mosaic GPU `hoisted.Recurrence`; ``hoisted.make_lstm`` turns it into an engine function.

  Args:
    matmul_precision: "float32" = "BF16_BF16_F32_X3" (float32-level, 3 bf16 products) or "bfloat16"
      (see the module docstring for the errors to expect).
    cluster_size: N, the CTAs sharing one 64-row batch block, in `CLUSTER_SIZES`; default
      `DEFAULT_CLUSTER_SIZE` on a GPU, `INTERPRET_CLUSTER_SIZE` in the interpreter.
    exchange: how the CTAs of a cluster share h (dz backward): "dsmem" (remote shared-memory stores,
      the GPU default) or "gmem" (global memory and a cluster barrier, what the interpreter can run, its
      default); unused for N = 1.
    interpret: run in the Mosaic GPU interpreter; default: unless tracing for a GPU.
  """
  if matmul_precision not in _PIECES:
    raise ConfigError(
      f"unknown matmul_precision {matmul_precision!r} for the mosaic LSTM engine; "
      f"choose one of: {', '.join(MATMUL_PRECISIONS)}"
    )
  if cluster_size is not None and cluster_size not in CLUSTER_SIZES:
    raise ConfigError(f"cluster_size must be one of {CLUSTER_SIZES}, got {cluster_size}")
  if exchange is not None and exchange not in EXCHANGES:
    raise ConfigError(f"exchange must be one of {', '.join(EXCHANGES)}, got {exchange!r}")
  pieces = _PIECES[matmul_precision]

  def setup_for(hidden: int) -> _Setup:
    if hidden > PADDED_HIDDEN:
      raise ConfigError(f"the mosaic LSTM engine handles hidden sizes up to {PADDED_HIDDEN}, got {hidden}")
    run_interpreted = hoisted.interpret() if interpret is None else interpret
    size = cluster_size or (INTERPRET_CLUSTER_SIZE if run_interpreted else DEFAULT_CLUSTER_SIZE)
    # The interpreter has no shared-memory limit, so it runs every configuration (which proves the
    # arithmetic of X3 at N = 2 too); a GPU only those that fit.
    if not run_interpreted and not fits(size, matmul_precision):
      smallest = min(n for n in CLUSTER_SIZES if fits(n, matmul_precision))
      raise ConfigError(
        f"matmul_precision {matmul_precision!r} needs cluster_size >= {smallest} on a GPU: with "
        f"{size} a CTA's weights and exchange buffer exceed {SMEM_BUDGET_BYTES // 1024} KiB of "
        "shared memory"
      )
    if size == 1:
      mode = "local"
    else:
      mode = exchange or ("gmem" if run_interpreted else "dsmem")
    return _Setup(cluster_size=size, pieces=pieces, exchange=mode, interpret=run_interpreted)

  def forward(xw, recurrent_kernel, h0, c0, step_mask, recurrent_dropout_mask):
    steps, batch, _ = xw.shape
    hidden = recurrent_kernel.shape[0]
    setup = setup_for(hidden)
    keep = jnp.broadcast_to(step_mask[:, :, None, None], (steps, batch, 1, hidden)).astype(jnp.float32)
    steps_in = _blocks(
      jnp.concatenate([_gate_planes(xw.astype(jnp.float32), hidden), keep], axis=2), setup.cluster_size
    )
    blocks = steps_in.shape[0]
    state = _state([h0, c0, recurrent_dropout_mask], setup).astype(jnp.float32)
    h_masked = hoisted.pad_to(h0 * recurrent_dropout_mask, (blocks * BLOCK_BATCH, PADDED_HIDDEN)).astype(
      jnp.float32
    )
    h_init = jnp.stack(_bf16_pieces(h_masked, pieces), axis=0).reshape(
      pieces, blocks, BLOCK_BATCH, PADDED_HIDDEN
    )
    h_init = h_init.transpose(1, 0, 2, 3)
    (steps_out,) = _launch(
      _forward_kernel,
      setup,
      blocks,
      [
        jax.ShapeDtypeStruct(
          (*steps_in.shape[:3], _FORWARD_OUT_PLANES, BLOCK_BATCH, setup.slice_width), jnp.float32
        )
      ],
      1,
      steps_in,
      state,
      h_init,
      _weights(recurrent_kernel, setup, transposed=False),
    )
    out = _unblock(steps_out, batch, hidden).astype(xw.dtype)
    return out[:, :, 0], out[:, :, 1], out[:, :, 2:].reshape(steps, batch, GATES * hidden)

  def backward(recurrent_kernel, gates, cs, c0, step_mask, recurrent_dropout_mask, dhs, dh_last, dc_last):
    steps, batch, hidden = cs.shape
    setup = setup_for(hidden)
    keep = jnp.broadcast_to(step_mask[:, :, None], (steps, batch, hidden))
    c_prevs = jnp.concatenate([c0[None], cs[:-1]], axis=0)
    planes = jnp.concatenate(
      [dhs[:, :, None], _gate_planes(gates, hidden), jnp.stack([cs, c_prevs, keep.astype(cs.dtype)], axis=2)],
      axis=2,
    )
    steps_in = _blocks(planes.astype(jnp.float32), setup.cluster_size)
    blocks = steps_in.shape[0]
    state = _state([dh_last, dc_last, recurrent_dropout_mask], setup).astype(jnp.float32)
    dz, final = _launch(
      _backward_kernel,
      setup,
      blocks,
      [
        jax.ShapeDtypeStruct((*steps_in.shape[:3], GATES, BLOCK_BATCH, setup.slice_width), jnp.float32),
        jax.ShapeDtypeStruct((blocks, setup.cluster_size, 2, BLOCK_BATCH, setup.slice_width), jnp.float32),
      ],
      GATES,
      steps_in,
      state,
      _weights(recurrent_kernel, setup, transposed=True),
    )
    dz = _unblock(dz, batch, hidden).reshape(steps, batch, GATES * hidden).astype(gates.dtype)
    final = _unblock(final[:, None], batch, hidden)[0].astype(dh_last.dtype)
    return dz, final[:, 0], final[:, 1]

  return hoisted.Recurrence(forward=forward, backward=backward)


def _product(a, b, pieces: int):
  """a @ b as the kernels compute it: bf16 pieces of both operands, float32 sums (see `_products`)."""
  a_pieces, b_pieces = _bf16_pieces(a, pieces), _bf16_pieces(b, pieces)
  return sum(
    jnp.matmul(a_pieces[i], b_pieces[j], preferred_element_type=jnp.float32) for i, j in _products(pieces)
  )


def make_reference(matmul_precision: str = "float32") -> hoisted.Recurrence:
  """The plain-JAX version of the kernels' computation, a `hoisted.Recurrence` too.

  The `fused` recurrence with the recurrent products rounded as the kernels round them (`_product`),
  written as `lax.scan`s over packed [B, 4H] gates: no padding, no clusters. The training-accuracy
  check of a reduced precision uses it on CPU, where it is fast.
  """
  pieces = _PIECES[matmul_precision]

  return hoisted.scan_recurrence(lambda a, b: _product(a, b, pieces))


@functools.cache
def _lstm_for(matmul_precision: str):
  reason = unavailable_reason()
  if reason is not None:
    raise ConfigError(reason)
  return hoisted.make_lstm(make_recurrence(matmul_precision))


def lstm(
  params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask, *, matmul_precision="float32"
):
  """The engine: the kernels inside `hoisted`'s custom VJP; see `seqclf.lstm.api.lstm` for the contract."""
  run = _lstm_for(matmul_precision)
  return run(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)

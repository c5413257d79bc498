"""The ``mosaic`` engine: the LSTM time loop as one Pallas Mosaic GPU kernel per pass, spread over a cluster.

Each 64-row batch block is shared by a cluster of N CTAs (`CLUSTER_SIZES`); CTA j owns 1/N of the hidden
units of all four gates and keeps its slice of U in shared memory for the whole loop. Forward, each step
gathers h from every CTA (all-gather) and multiplies it by CTA j's gate columns on Hopper's tensor cores
(``wgmma``); backward, CTA j multiplies its own dz by its rows of U^T and sends each CTA that CTA's share
of the partial dh (reduce-scatter). The exchange goes through distributed shared memory on a GPU
("dsmem") or global memory in the interpreter ("gmem", refused for a GPU). ``matmul_precision``: "float32" (=
"BF16_BF16_F32_X3", three bf16 products) or "bfloat16". The gate arithmetic is built from exp and rsqrt,
which a GPU runs as ``ex2.approx``/``rsqrt.approx`` (`APPROX_ERRORS`). Off a GPU the kernels run in the
Mosaic GPU interpreter (N <= 2). `make_lstm` wraps the kernels in a custom VJP whose input projection
and weight gradients are large matmuls, in the model's own batch-major layouts (nothing per step is
transposed); `make_reference` is the plain-JAX computation that rounds like the kernels. Design,
precision and the cost model: docs/kernels.md.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn.cells import matmul
from seqclf.rnn.engines import hoisted

GATES = 4
# wgmma's M: the batch rows of one cluster.
BLOCK_BATCH = 64
# Hidden units are padded to this (H = 100 -> 128); the cluster splits them evenly.
PADDED_HIDDEN = 128
# Cluster sizes the kernels are built for (docs/kernels.md says why not 16).
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
# The values `lstm`'s ``matmul_precision`` takes (the engine's ``matmul_precisions`` in `seqclf.rnn.engines.ENGINES`).
MATMUL_PRECISIONS = tuple(_PIECES)
# The arrays a forward kernel writes per step, by use: training keeps h, c and the four gates for the
# backward; a forward without gradient only h; one that only wants the final state nothing (the final
# (h, c) is stored once, by every kernel). h and c are [Bp, T + 1, Hp] with the initial state at step 0,
# the gates [Bp, T, 4 Hp].
FORWARD_STORES = {"train": ("h", "c", "gates"), "sequence": ("h",), "final": ()}
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


# Forward: the all-gather of h; backward: the reduce-scatter of the partial dh.
_PASSES = ("forward", "backward")

# The largest relative error of the approximate instructions a GPU runs the gate arithmetic with
# (`approx_math`), as NVIDIA specifies them (PTX ISA, "ex2" and "rsqrt"; CUDA C++ Programming Guide,
# intrinsic functions: __expf, which is ex2.approx of x * log2(e), 2 + floor(1.173 |x|) ulp). exp's is
# a function of its argument; tests/test_mosaic_gpu.py runs the reference with these errors, all of one
# sign at every step, and holds it to float32 scan at T = 500.
APPROX_ERRORS = {
  "exp": lambda x: (2.0 + jnp.floor(1.173 * jnp.abs(x))) * 2.0**-23,
  "rsqrt": lambda x: 2.0**-22.9 + 0.0 * x,
}


def sigmoid(z, exp=jnp.exp, rsqrt=jax.lax.rsqrt):
  """1 / (1 + e^-z) as rsqrt(1 + e^-z)^2: ex2.approx and rsqrt.approx on a GPU, where sigmoid would be
  an IEEE division and a libdevice expf (e^-z = inf for z < -88 gives rsqrt(inf)^2 = 0, as it should)."""
  root = rsqrt(1.0 + exp(-z))
  return root * root


def tanh(x, exp=jnp.exp, rsqrt=jax.lax.rsqrt):
  """tanh(x) = 2 sigmoid(2x) - 1: two approximate instructions instead of libdevice's tanhf (a GPU's
  tanh.approx is accurate to only ~2^-11); absolute error ~2^-22, enough for the state."""
  return 2.0 * sigmoid(2.0 * x, exp, rsqrt) - 1.0


def _bf16_pieces(x, pieces: int):
  """x (f32) -> [hi] or [hi, lo] in bfloat16, hi + lo = x to ~2^-16 relative."""
  hi = x.astype(jnp.bfloat16)
  if pieces == 1:
    return [hi]
  return [hi, (x - hi.astype(jnp.float32)).astype(jnp.bfloat16)]


def _products(pieces: int):
  """(operand piece, weight piece) pairs summed per matmul: hi*hi, plus lo*hi and hi*lo for X3."""
  return [(0, 0)] if pieces == 1 else [(0, 0), (1, 0), (0, 1)]


def _fixed_bytes(cluster_size: int, pieces: int, kernel_pass: str) -> int:
  """Shared memory a CTA holds for the whole loop: its slice of U (forward) or U^T (backward), 4 Hp Hs
  bf16 values per piece, and the backward's dz operand [pieces * 4, 64, Hs] bf16."""
  width = PADDED_HIDDEN // cluster_size
  weights = pieces * GATES * PADDED_HIDDEN * width * 2
  return weights + (pieces * GATES * BLOCK_BATCH * width * 2 if kernel_pass == "backward" else 0)


def _slot_bytes(pieces: int, kernel_pass: str) -> int:
  """Shared memory of one exchange slot: h [64, Hp] in bf16 pieces, or the N partials [64, Hs] f32."""
  if kernel_pass == "forward":
    return pieces * BLOCK_BATCH * PADDED_HIDDEN * 2
  return BLOCK_BATCH * PADDED_HIDDEN * 4


def exchange_slots(cluster_size: int, pieces: int, kernel_pass: str) -> int:
  """Slots of a pass's exchange buffer: 2 (double buffer, no second barrier) if they fit, else 1, else 0.

  The backward at N = 1 exchanges nothing (its partial is the whole dh): 2 if the rest fits, else 0.
  """
  fixed = _fixed_bytes(cluster_size, pieces, kernel_pass)
  if kernel_pass == "backward" and cluster_size == 1:
    return 2 if fixed <= SMEM_BUDGET_BYTES else 0
  for slots in (2, 1):
    if fixed + slots * _slot_bytes(pieces, kernel_pass) <= SMEM_BUDGET_BYTES:
      return slots
  return 0


def _tiled(width: int, dtype=jnp.bfloat16):
  """The SMEM tiling and swizzle of a wgmma operand or received partial whose column blocks are ``width`` wide."""
  itemsize = jnp.dtype(dtype).itemsize
  swizzle = min(128, width * itemsize)
  return (plgpu.TilingTransform((8, swizzle // itemsize)), plgpu.SwizzleTransform(swizzle))


def _load(ref):
  """A [64, Hs] f32 plane from global memory into registers, in the wgmma accumulator's layout."""
  # jax 0.11.2 refuses the default optimized=True for a load from global memory ("Only optimized
  # transfers to SMEM supported"); the plain lowering is what it has.
  return plgpu.load(ref, layout=plgpu.Layout.WGMMA, optimized=False)


def _store(ref, value):
  """A [64, Hs] f32 plane from registers into a window of a global array."""
  if hasattr(plgpu, "store"):
    # jax >= 0.12 plans global stores in whole 128-byte lines and refuses a narrower window (Hs = 16 is
    # 64 bytes a row) unless asked for the plain lowering; jax 0.11 has no `store` and lowers plainly.
    plgpu.store(ref, value, optimized=False)
  else:
    ref[...] = value


def _accumulate(count: int, width: int, issue):
  """``count`` f32 [64, width] products: ``issue(accumulators)`` issues the wgmmas, one wait, the values."""

  def run(*accumulators):
    issue(accumulators)
    plgpu.wgmma_wait(0)
    return [accumulator[...] for accumulator in accumulators]

  return pl.run_scoped(run, *[plgpu.ACC((BLOCK_BATCH, width), jnp.float32) for _ in range(count)])


# wgmma's largest N: the forward's columns of several gates share a wgmma up to this width.
WGMMA_MAX_N = 256


def gates_per_wgmma(slice_width: int) -> int:
  """Gates whose [Hp, Hs] column slices one forward wgmma multiplies at once (so it reads h once)."""
  return min(GATES, WGMMA_MAX_N // slice_width)


def _piece_rows(piece):
  """The rows of bf16 piece ``piece`` (hi 0, lo 1) of h in a forward exchange slot [pieces * 64, Hp]."""
  return pl.ds(piece * BLOCK_BATCH, BLOCK_BATCH)


def _gate_products(setup: _Setup, h_buffer, weights_smem):
  """Forward: h [64, Hp] (bf16 pieces in SMEM, one above the other: [pieces * 64, Hp]) times CTA j's
  columns of the four gates, [Hp, 4 Hs], in as few wgmmas as wgmma's width allows; returns the four
  [64, Hs] f32 products."""
  per_wgmma, width = gates_per_wgmma(setup.slice_width), setup.slice_width

  def issue(accumulators):
    for group, accumulator in enumerate(accumulators):
      for piece, weight_piece in _products(setup.pieces):
        groups = GATES // per_wgmma
        plgpu.wgmma(
          accumulator, h_buffer.at[_piece_rows(piece)], weights_smem.at[weight_piece * groups + group]
        )

  groups = _accumulate(GATES // per_wgmma, per_wgmma * width, issue)
  return [group[:, k * width : (k + 1) * width] for group in groups for k in range(per_wgmma)]


def _partial_dh(setup: _Setup, dz, dz_smem, weights_smem):
  """Backward: CTA j's dz ([64, Hs] per gate) times its rows of U^T ([Hs, Hp] per gate), one
  [64, Hp] f32 accumulator, cut into the N [64, Hs] shares of dh_{t-1} it contributes to each CTA.

  dz goes to the tensor cores through this CTA's own shared memory (``dz_smem`` [pieces * 4, 64, Hs]
  bf16): wgmma could take it from registers, but jax 0.11's interpreter cannot run that, and the stores
  are local and small.
  """
  for gate, dz_gate in enumerate(dz):
    for piece, value in enumerate(_bf16_pieces(dz_gate, setup.pieces)):
      dz_smem[piece * GATES + gate] = value
  plgpu.commit_smem()

  def issue(accumulators):
    (accumulator,) = accumulators
    for gate in range(GATES):
      for piece, weight_piece in _products(setup.pieces):
        plgpu.wgmma(
          accumulator, dz_smem.at[piece * GATES + gate], weights_smem.at[weight_piece * GATES + gate]
        )

  (partial,) = _accumulate(1, PADDED_HIDDEN, issue)
  width = setup.slice_width
  return [partial[:, k * width : (k + 1) * width] for k in range(setup.cluster_size)]


def _rows(block):
  """The 64 batch rows of cluster ``block``."""
  return pl.ds(pl.multiple_of(block * BLOCK_BATCH, BLOCK_BATCH), BLOCK_BATCH)


def _columns(start, width: int):
  """``width`` columns from ``start`` (a multiple of ``width``)."""
  return pl.ds(pl.multiple_of(start, width), width)


def send_slice(rows, slot_buffer, barrier, cta, cluster_size: int, width: int):
  """The forward's send: CTA ``cta``'s [pieces * 64, Hs] bf16 slice of h (the pieces one above the other)
  into columns [cta Hs, (cta + 1) Hs) of every CTA's ``slot_buffer`` [pieces * 64, Hp], arriving on each
  receiver's ``barrier``. One `plgpu.async_store_smem` call per target carries both pieces: each call
  has all `WARPGROUP_THREADS` threads arrive on the receiver's barrier (jax 0.11's lowering; CUTLASS
  arrives once per warp), so a receiver counts N x 128 arrivals a step, not N x pieces x 128."""
  columns = _columns(cta * width, width)
  for target in range(cluster_size):
    plgpu.async_store_smem(
      rows, slot_buffer.at[:, columns], barrier, cluster_idx=target, cluster_dim="cluster"
    )


class _Exchange:
  """Both passes' exchange between the CTAs of a cluster; ``slots`` buffers, used by step parity.

  Forward (`gather`): every CTA's [64, Hs] slice of h, in bf16 pieces, lands in every CTA's
  [slots, pieces * 64, Hp] SMEM buffer (the pieces one above the other), the next step's wgmma operand.
  Backward (`reduce_scatter`): CTA j's share for CTA k's units, [64, Hs] f32, lands in row j of CTA k's
  [slots, N, 64, Hs] buffer, and CTA k sums the N rows.
  """

  def __init__(self, setup, slots, buffer, ready, staging, exchange_gmem, gmem_barriers, cluster_barrier):
    self.setup, self.slots, self.buffer, self.ready = setup, slots, buffer, ready
    self.staging, self.exchange_gmem = staging, exchange_gmem
    self.gmem_barriers, self.cluster_barrier = gmem_barriers, cluster_barrier

  def slot(self, index):
    """The buffer slot that holds the exchange of step ``index``."""
    return index % self.slots

  def _cluster_barrier(self):
    plgpu.barrier_arrive(self.cluster_barrier)
    plgpu.barrier_wait(self.cluster_barrier)

  def send(self, index, h, cta):
    """Issues CTA ``cta``'s h slice for step ``index`` to every CTA's buffer ("dsmem"; "local" stores it,
    "gmem" does the whole exchange in `receive`). Apart from `receive` so that a step issues its send
    first and stores its planes to global memory while the remote stores travel."""
    setup = self.setup
    if setup.exchange == "gmem":
      return
    slot = self.slot(index)
    # hi and lo one above the other: one store call per target carries both pieces (`send_slice`).
    rows = jnp.concatenate(_bf16_pieces(h, setup.pieces), axis=0)
    if setup.exchange == "local":
      self.buffer[slot] = rows
      return
    send_slice(rows, self.buffer.at[slot], self.ready.at[slot], cta, setup.cluster_size, setup.slice_width)

  def receive(self, index, h, block, cta):
    """Returns once every CTA's h slice for step ``index`` is in this CTA's buffer, ordered before the
    tensor cores' reads (``h``: this CTA's slice, which "gmem" sends from here)."""
    setup = self.setup
    slot = self.slot(index)
    if setup.exchange == "local":
      # Order the stores before the tensor cores' (async proxy) reads.
      plgpu.commit_smem()
      return
    if setup.exchange == "dsmem":
      plgpu.barrier_wait(self.ready.at[slot])
      # The reader is this CTA's wgmma (async proxy) and the writers other SMs' st.async, so the fence
      # that orders the data before the reads is the reader's, after the barrier says it has landed.
      plgpu.commit_smem()
      return
    # "gmem": stage, store to global memory, cluster barrier, then every CTA copies all slices in. The
    # global copy has two slots whatever the SMEM buffer has: a CTA rewrites one two steps on, after
    # the barrier of the next step, which every CTA reaches only after reading it.
    width = setup.slice_width
    for piece, value in enumerate(_bf16_pieces(h, setup.pieces)):
      self.staging[piece] = value
    plgpu.commit_smem()
    gmem_slot = index % 2
    plgpu.copy_smem_to_gmem(self.staging, self.exchange_gmem.at[block, gmem_slot, cta])
    plgpu.wait_smem_to_gmem(0)
    self._cluster_barrier()
    for owner in range(setup.cluster_size):
      for piece in range(setup.pieces):
        plgpu.copy_gmem_to_smem(
          self.exchange_gmem.at[block, gmem_slot, owner, piece],
          self.buffer.at[slot, _piece_rows(piece), pl.ds(owner * width, width)],
          self.gmem_barriers.at[owner],
        )
    for owner in range(setup.cluster_size):
      plgpu.barrier_wait(self.gmem_barriers.at[owner])

  def gather(self, index, h, block, cta):
    """`send` then `receive`: CTA ``cta``'s h slice for step ``index`` in every CTA's buffer."""
    self.send(index, h, cta)
    self.receive(index, h, block, cta)

  def reduce_scatter(self, index, partials, block, cta):
    """Sends CTA ``cta``'s share ``partials[k]`` to CTA k, returns the sum of the N shares it received.

    Two slots make this safe with no second barrier, as for `gather`: a CTA writes a slot again two
    steps on, after its next step's wait, which needs every CTA's next send, which each makes after
    summing this step's shares (with one SMEM slot, `release` adds the barrier). The sum runs over
    senders in a fixed order: reproducible.
    """
    setup = self.setup
    if setup.exchange == "local":
      return partials[0]
    if setup.exchange == "dsmem":
      slot = self.slot(index)
      for target, partial in enumerate(partials):
        plgpu.async_store_smem(
          partial, self.buffer.at[slot, cta], self.ready.at[slot], cluster_idx=target, cluster_dim="cluster"
        )
      plgpu.barrier_wait(self.ready.at[slot])
      # Ordinary loads read the shares, so no proxy fence is needed (no async-proxy reader).
      shares = [
        plgpu.load(self.buffer.at[slot, sender], layout=plgpu.Layout.WGMMA)
        for sender in range(setup.cluster_size)
      ]
    else:
      # "gmem": every share through global memory and one cluster barrier, in two global slots by step
      # parity whatever the SMEM has (see `gather`), the barrier being between this step's stores and
      # loads only.
      parity = index % 2
      for target, partial in enumerate(partials):
        _store(self.exchange_gmem.at[block, parity, target, cta], partial)
      self._cluster_barrier()
      shares = [
        _load(self.exchange_gmem.at[block, parity, cta, sender]) for sender in range(setup.cluster_size)
      ]
    total = shares[0]
    for share in shares[1:]:
      total = total + share
    return total

  def finish(self):
    """Before the CTA exits: a cluster barrier, so that no CTA leaves while a remote store it issued may
    still be in flight, or while another CTA may still store into its shared memory (the CUDA C++
    Programming Guide's rule for distributed shared memory: every access done before any block exits)."""
    if self.setup.exchange == "dsmem":
      self._cluster_barrier()

  def release(self):
    """After the step's last read of the buffer: with one slot no CTA may overwrite it before all have read it."""
    if self.slots == 1 and self.setup.exchange == "dsmem":
      self._cluster_barrier()


def _kernel_scratch(setup: _Setup, slots: int, kernel_pass: str):
  """The kernels' scratch, in argument order: weights, exchange buffer and its barriers, staging, dz."""
  width, n, pieces = setup.slice_width, setup.cluster_size, setup.pieces
  gmem = setup.exchange == "gmem"
  if kernel_pass == "forward":
    groups = GATES // gates_per_wgmma(setup.slice_width)
    weights = plgpu.SMEM(
      (pieces * groups, PADDED_HIDDEN, GATES // groups * width), jnp.bfloat16, transforms=_tiled(width)
    )
    buffer = [
      plgpu.SMEM((slots, pieces * BLOCK_BATCH, PADDED_HIDDEN), jnp.bfloat16, transforms=_tiled(width))
    ]
    # One store call per sender (`send_slice`), each arriving once per thread.
    arrivals = WARPGROUP_THREADS * n
    staging = [plgpu.SMEM((pieces, BLOCK_BATCH, width), jnp.bfloat16)] if gmem else []
    copies = [plgpu.Barrier(num_barriers=n, num_arrivals=pieces)] if gmem else []
    operand = []
  else:
    # CTA j's rows of U^T, [Hs, Hp] per (piece, gate): the B operand of one wgmma each.
    weights = plgpu.SMEM((pieces * GATES, width, PADDED_HIDDEN), jnp.bfloat16, transforms=_tiled(width))
    # The receive buffer exists only for the remote stores; "gmem" sums straight from global memory.
    buffer = (
      [plgpu.SMEM((slots, n, BLOCK_BATCH, width), jnp.float32, transforms=_tiled(width, jnp.float32))]
      if setup.exchange == "dsmem"
      else []
    )
    arrivals = WARPGROUP_THREADS * n
    staging, copies = [], []
    operand = [plgpu.SMEM((pieces * GATES, BLOCK_BATCH, width), jnp.bfloat16, transforms=_tiled(width))]
  return [
    weights,
    buffer,
    plgpu.Barrier(num_barriers=slots, num_arrivals=arrivals),
    staging,
    copies,
    operand,  # the backward's dz, the A operand of its wgmmas
    plgpu.ClusterBarrier(collective_axes=("cluster",)),
    # The weights, one TMA copy per leading index (a whole slice would take 6 strided dimensions, TMA 5).
    plgpu.Barrier(num_arrivals=weights.shape[0]),
  ]


def _prologue(setup, slots, weights_gmem, scratch, exchange_gmem):
  """Loads the CTA's weight slice; returns (block, cta, exchange, weights_smem, operand)."""
  weights_smem, buffer, ready, staging, gmem_barriers, operand, cluster_barrier, loaded = scratch
  buffer, staging, gmem_barriers, operand = (
    group[0] if group else None for group in (buffer, staging, gmem_barriers, operand)
  )
  block, cta = jax.lax.axis_index("batch"), jax.lax.axis_index("cluster")
  for index in range(weights_smem.shape[0]):
    plgpu.copy_gmem_to_smem(weights_gmem.at[cta, index], weights_smem.at[index], loaded)
  plgpu.barrier_wait(loaded)
  if setup.exchange == "dsmem":
    # Every CTA's barriers exist before anyone stores into its shared memory.
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)
  exchange = _Exchange(setup, slots, buffer, ready, staging, exchange_gmem, gmem_barriers, cluster_barrier)
  return block, cta, exchange, weights_smem, operand


class _Window:
  """CTA ``cta``'s [64, Hs] windows of cluster ``block``'s rows in the model's own layouts: [B, T, X]
  per-step arrays (X = Hp or 4 Hp, gate g's units at g Hp), [B, Hp] states, the [B, T] step mask."""

  def __init__(self, block, cta, width):
    self.rows, self.cta, self.width = _rows(block), cta, width

  def columns(self, gate=0):
    return _columns(gate * PADDED_HIDDEN + self.cta * self.width, self.width)

  def load(self, ref, t=None, gate=0):
    index = (self.rows, self.columns(gate)) if t is None else (self.rows, t, self.columns(gate))
    return _load(ref.at[index])

  def store(self, ref, value, t=None, gate=0):
    index = (self.rows, self.columns(gate)) if t is None else (self.rows, t, self.columns(gate))
    _store(ref.at[index], value)

  def mask_row(self, mask_ref, t):
    """The step mask of the block's rows at step t, [64] f32 (1 = real step): carried as a row, not a plane."""
    return plgpu.load(mask_ref.at[self.rows, t], layout=plgpu.Layout.WGMMA.reduce(1), optimized=False)

  def keep(self, row):
    """The step mask row broadcast over the CTA's units: [64, Hs] bool."""
    return jnp.broadcast_to(row[:, None], (BLOCK_BATCH, self.width)) > 0.5


def _time_loop(steps: int, load, body, init, reverse: bool):
  """Runs ``body(index, t, inputs, carry) -> carry`` over the steps (t = the step's time), returns the
  last carry. ``load(t)`` reads a step's inputs from global memory into registers; it runs one step ahead
  (the inputs travel in the loop carry, so their latency hides behind the step before)."""

  def time_of(index):
    return steps - 1 - index if reverse else index

  def step(index, carry):
    inputs, state = carry
    next_inputs = load(time_of(jnp.minimum(index + 1, steps - 1)))
    return next_inputs, body(index, time_of(index), inputs, state)

  _, state = jax.lax.fori_loop(0, steps, step, (load(time_of(0)), init))
  return state


def _forward_kernel(xw_gmem, mask_gmem, state_gmem, weights_gmem, *refs, setup, slots, stores):
  """One cluster's batch block of the forward (see the module docstring), in the model's layouts.

  Inputs: xw [Bp, T, 4 Hp], the step mask [Bp, T], the state [3, Bp, Hp] (h0, c0, recurrent dropout
  mask). ``refs``: the outputs (the final state [2, Bp, Hp], then the arrays `FORWARD_STORES` names for
  ``stores``), the exchange's global buffer and the scratch.
  """
  stored = FORWARD_STORES[stores]
  planes = len(stored)
  final_gmem, outputs, exchange_gmem, scratch = (
    refs[0],
    refs[1 : 1 + planes],
    refs[1 + planes],
    refs[2 + planes :],
  )
  block, cta, exchange, weights_smem, _ = _prologue(setup, slots, weights_gmem, scratch, exchange_gmem)
  window = _Window(block, cta, setup.slice_width)
  steps = xw_gmem.shape[1]
  h0, c0, recurrent_mask = (window.load(state_gmem.at[plane]) for plane in range(3))
  arrays = dict(zip(stored, outputs))
  for name, value in (("h", h0), ("c", c0)):
    if name in arrays:
      window.store(arrays[name], value, 0)
  exchange.gather(0, h0 * recurrent_mask, block, cta)

  def load(t):
    return [window.load(xw_gmem, t, gate) for gate in range(GATES)] + [window.mask_row(mask_gmem, t)]

  def body(index, t, inputs, carry):
    h, c = carry
    xw, keep = inputs[:GATES], window.keep(inputs[GATES])
    products = _gate_products(setup, exchange.buffer.at[exchange.slot(index)], weights_smem)
    exchange.release()
    z = [x + p for x, p in zip(xw, products)]
    i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), tanh(z[2]), sigmoid(z[3])
    c_new = jnp.where(keep, f * c + i * g, c)
    h_new = jnp.where(keep, o * tanh(c_new), h)
    h_sent = h_new * recurrent_mask
    more = index + 1 < steps
    # The next step's h goes out first: the plane stores below run while the remote stores travel.
    pl.when(more)(lambda: exchange.send(index + 1, h_sent, cta))
    for name, value in (("h", h_new), ("c", c_new)):
      if name in arrays:
        window.store(arrays[name], value, t + 1)
    if "gates" in arrays:
      for gate, value in enumerate((i, f, g, o)):
        window.store(arrays["gates"], value, t, gate)
    pl.when(more)(lambda: exchange.receive(index + 1, h_sent, block, cta))
    return h_new, c_new

  h, c = _time_loop(steps, load, body, (h0, c0), reverse=False)
  window.store(final_gmem.at[0], h)
  window.store(final_gmem.at[1], c)
  exchange.finish()


def _backward_kernel(
  gates_gmem, cs_gmem, mask_gmem, state_gmem, weights_gmem, *refs, setup, slots, per_step_cotangent
):
  """One cluster's batch block of the backward, steps in reverse (see the module docstring).

  Inputs: the gates [Bp, T, 4 Hp], c [Bp, T + 1, Hp] (c0 at step 0), the step mask [Bp, T], the state
  [3, Bp, Hp] (dh and dc of the final state, the recurrent dropout mask), then, with
  ``per_step_cotangent``, the outputs' cotangent [Bp, T, Hp] (without, every step's is 0: a
  ``return_sequences=False`` call). ``refs``: dz [Bp, T, 4 Hp], dh0 and dc0 [2, Bp, Hp], the exchange's
  global buffer and the scratch.
  """
  if per_step_cotangent:
    dhs_gmem, refs = refs[0], refs[1:]
  dz_gmem, final_gmem, exchange_gmem, scratch = refs[0], refs[1], refs[2], refs[3:]
  block, cta, exchange, weights_smem, dz_smem = _prologue(setup, slots, weights_gmem, scratch, exchange_gmem)
  window = _Window(block, cta, setup.slice_width)
  dh_last, dc_last, recurrent_mask = (window.load(state_gmem.at[plane]) for plane in range(3))

  def load(t):
    gates = [window.load(gates_gmem, t, gate) for gate in range(GATES)]
    states = [window.load(cs_gmem, t + 1), window.load(cs_gmem, t), window.mask_row(mask_gmem, t)]
    return gates + states + ([window.load(dhs_gmem, t)] if per_step_cotangent else [])

  def body(index, t, inputs, carry):
    dh_next, dc_next = carry
    i, f, g, o, c, c_prev, row = inputs[:7]
    keep = window.keep(row)
    dh = dh_next + inputs[7] if per_step_cotangent else dh_next
    tanh_c = tanh(c)
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
    for gate, value in enumerate(dz):
      window.store(dz_gmem, value, t, gate)
    dh_recurrent = exchange.reduce_scatter(index, _partial_dh(setup, dz, dz_smem, weights_smem), block, cta)
    exchange.release()
    # A masked step passed the state through unchanged, so its cotangents pass through too.
    dh_prev = jnp.where(keep, dh_recurrent * recurrent_mask, dh)
    dc_prev = jnp.where(keep, dc * f, dc_next)
    return dh_prev, dc_prev

  dh0, dc0 = _time_loop(cs_gmem.shape[1] - 1, load, body, (dh_last, dc_last), reverse=True)
  window.store(final_gmem.at[0], dh0)
  window.store(final_gmem.at[1], dc0)
  exchange.finish()


def _gate_planes(x, hidden: int):
  """[..., 4H] -> [..., 4, H]."""
  return x.reshape(*x.shape[:-1], GATES, hidden)


def _weights(recurrent_kernel, setup: _Setup, kernel_pass: str):
  """U [H, 4H] -> each CTA's slice in bf16 pieces (piece-major), as `_kernel_scratch` holds it.

  Forward [N, pieces * groups, Hp, 4 Hs / groups]: CTA j's columns of the gates of each wgmma's group,
  side by side, U[:, gate g, units of CTA j] (rows: all h units). Backward [N, pieces * 4, Hs, Hp]:
  [j, g][u, m] = U[unit m, gate g unit u of CTA j], the rows of U^T that take CTA j's dz of gate g to
  every unit.
  """
  n, width = setup.cluster_size, setup.slice_width
  hidden = recurrent_kernel.shape[0]
  u = hoisted.pad_to(
    _gate_planes(recurrent_kernel, hidden), (PADDED_HIDDEN, GATES, PADDED_HIDDEN)
  )  # [m, g, unit]
  if kernel_pass == "forward":
    groups = GATES // gates_per_wgmma(setup.slice_width)
    u = u.reshape(PADDED_HIDDEN, groups, GATES // groups, n, width).transpose(3, 1, 0, 2, 4)
    shape = (n, setup.pieces * groups, PADDED_HIDDEN, GATES // groups * width)
  else:
    u = u.reshape(PADDED_HIDDEN, GATES, n, width).transpose(2, 1, 3, 0)  # [j, g, unit u, m]
    shape = (n, setup.pieces * GATES, width, PADDED_HIDDEN)
  pieces = jnp.stack(_bf16_pieces(u.astype(jnp.float32), setup.pieces), axis=1)
  return pieces.reshape(shape)


def _exchange_type(setup: _Setup, blocks: int, kernel_pass: str):
  """The "gmem" exchange's global buffer, two slots by step parity; one element where it is unused."""
  if setup.exchange != "gmem":
    return jax.ShapeDtypeStruct((1,), jnp.float32)
  n, shape = setup.cluster_size, (BLOCK_BATCH, setup.slice_width)
  if kernel_pass == "forward":  # [block, slot, sender, piece, 64, Hs] bf16
    return jax.ShapeDtypeStruct((blocks, 2, n, setup.pieces, *shape), jnp.bfloat16)
  return jax.ShapeDtypeStruct((blocks, 2, n, n, *shape), jnp.float32)  # [block, slot, receiver, sender, ..]


def _needs_auto_barriers(setup: _Setup) -> bool:
  """Whether Pallas must put a warpgroup barrier (``bar.sync``) around every ``ref[...] =`` store and
  copy, as it does unless ``CompilerParams(unsafe_no_auto_barriers=True)``.

  Without them the kernels stay correct when no thread both reads and writes one memory region and no
  thread reads shared memory it committed before an async copy overwrites it (jax's condition), and
  every write that another thread or the tensor cores read is ordered by a barrier of the kernel's
  own. "local" and "dsmem" meet it: the global arrays a kernel writes it never reads, those it reads
  it never writes; the shared memory that threads write (h's pieces at N = 1, the backward's dz) is
  read only by wgmma, after `plgpu.commit_smem`, which is a fence and a warpgroup barrier; the
  exchange buffers are written only by st.async and read (by wgmma, or the backward's loads) after
  their mbarrier's wait; a slot is written again only two steps on (one slot: after a cluster
  barrier), once every thread of the reader has sent its next step, which each sends after its reads.
  "gmem" keeps them: each CTA reads back through global memory the shares it stored there itself.
  """
  return setup.exchange == "gmem"


def _launch(kernel, setup: _Setup, blocks: int, out_types, kernel_pass: str, *args):
  """Runs ``kernel`` on a grid of ``blocks`` clusters of N CTAs; returns its outputs but the exchange's."""
  # 0 slots (over the GPU's limit) only reaches here interpreted, where shared memory is unlimited.
  slots = exchange_slots(setup.cluster_size, setup.pieces, kernel_pass) or 1
  call = plgpu.kernel(
    functools.partial(kernel, setup=setup, slots=slots),
    out_type=(*out_types, _exchange_type(setup, blocks, kernel_pass)),
    scratch_types=_kernel_scratch(setup, slots, kernel_pass),
    grid=(blocks,),
    grid_names=("batch",),
    cluster=(setup.cluster_size,),
    cluster_names=("cluster",),
    # exp and rsqrt as ex2.approx and rsqrt.approx (`APPROX_ERRORS`); the interpreter computes them exactly.
    compiler_params=plgpu.CompilerParams(
      approx_math=True, unsafe_no_auto_barriers=not _needs_auto_barriers(setup)
    ),
    interpret=plgpu.InterpretGPUParams() if setup.interpret else None,
  )
  return call(*args)[:-1]


def fits(cluster_size: int, matmul_precision: str) -> bool:
  """Whether both kernels of this configuration fit in a CTA's shared memory."""
  pieces = _PIECES[matmul_precision]
  return all(exchange_slots(cluster_size, pieces, kernel_pass) > 0 for kernel_pass in _PASSES)


def exchange_mode(cluster_size: int, exchange: str | None, interpret: bool) -> str:
  """The exchange a setup runs: "local" at N = 1, else ``exchange`` or the default ("gmem" interpreted,
  "dsmem" on a GPU); "gmem" is refused for a GPU."""
  if cluster_size == 1:
    return "local"
  mode = exchange or ("gmem" if interpret else "dsmem")
  if mode == "gmem" and not interpret:
    # The backward reads other SMs' shares with plain global loads after the cluster barrier; such a
    # load may hit a stale line of this SM's L1. It would need ld.acquire.cluster or an L1-bypassing
    # ld.global.cg, and jax 0.11's `plgpu.load` from global memory has neither (nor a cache modifier).
    raise ConfigError(
      'exchange="gmem" runs in the interpreter only: on a GPU its global loads could read stale L1 '
      'lines (jax offers no acquire or L1-bypassing load); use exchange="dsmem"'
    )
  return mode


def make_lstm(
  matmul_precision: str = "float32",
  *,
  cluster_size: int | None = None,
  exchange: str | None = None,
  interpret: bool | None = None,
) -> Callable:
  """The engine function: the kernels in the model's own layouts inside a hand-written VJP whose weight
  gradients are hoisted matmuls, as `hoisted.make_lstm`'s (`seqclf.rnn.engines` engine signature, plus
  ``return_sequences``).

  Args:
    matmul_precision: "float32" = "BF16_BF16_F32_X3" (float32-level, 3 bf16 products) or "bfloat16"
      (see the module docstring for the errors to expect).
    cluster_size: N, the CTAs sharing one 64-row batch block, in `CLUSTER_SIZES`; default
      `DEFAULT_CLUSTER_SIZE` on a GPU, `INTERPRET_CLUSTER_SIZE` in the interpreter.
    exchange: how the CTAs of a cluster share h (dz backward): "dsmem" (remote shared-memory stores,
      the GPU default) or "gmem" (global memory and a cluster barrier, what the interpreter can run, its
      default; refused for a GPU); unused for N = 1.
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
    mode = exchange_mode(size, exchange, run_interpreted)
    return _Setup(cluster_size=size, pieces=pieces, exchange=mode, interpret=run_interpreted)

  def prepare(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    """The kernels' inputs in the model's layouts, batch padded to whole 64-row blocks and each gate's
    units to Hp: (setup, padded params, the inputs as [Bp * T, E] rows, xw [Bp, T, 4 Hp], the step mask
    [Bp, T], the state [3, Bp, Hp]). Batch-major throughout: nothing is transposed."""
    batch, steps, input_size = xs.shape
    hidden = h0.shape[-1]
    setup = setup_for(hidden)
    rows = pl.cdiv(batch, BLOCK_BATCH) * BLOCK_BATCH
    padded = _padded_params(params, hidden)
    dropped = hoisted.pad_to(xs * input_dropout_mask[:, None, :], (rows, steps, input_size))
    input_rows = dropped.reshape(rows * steps, input_size)
    xw = (matmul(input_rows, padded["kernel"]) + padded["bias"]).reshape(rows, steps, GATES * PADDED_HIDDEN)
    mask = hoisted.pad_to(step_mask.astype(jnp.float32), (rows, steps))
    state = _padded_states([h0, c0, recurrent_dropout_mask], rows)
    return setup, padded, input_rows, xw, mask, state

  def run_forward(stores, *args):
    """The forward kernel storing ``stores`` (`FORWARD_STORES`): (its outputs, the final state cropped)."""
    setup, padded, input_rows, xw, mask, state = prepare(*args)
    rows, steps = mask.shape
    batch, hidden = args[2].shape

    def planes(*shape):
      return jax.ShapeDtypeStruct(shape, jnp.float32)

    shapes = {"h": (rows, steps + 1, PADDED_HIDDEN), "c": (rows, steps + 1, PADDED_HIDDEN)}
    shapes["gates"] = (rows, steps, GATES * PADDED_HIDDEN)
    per_step = [planes(*shapes[name]) for name in FORWARD_STORES[stores]]
    final, *outputs = _launch(
      functools.partial(_forward_kernel, stores=stores),
      setup,
      rows // BLOCK_BATCH,
      [planes(2, rows, PADDED_HIDDEN), *per_step],
      "forward",
      xw,
      mask,
      state,
      _weights(args[0]["recurrent_kernel"], setup, "forward"),
    )
    residuals = (padded, input_rows, mask, state)
    return outputs, (final[0, :batch, :hidden], final[1, :batch, :hidden]), residuals

  return engine_over(run_forward, setup_for)


def engine_over(run_forward, setup_for):
  """The engine (`hoisted.with_return_sequences`) over a forward layout's ``run_forward(stores, *args)``
  -> ``(outputs, (h, c), residuals)``, whose stores are "sequence" (h), "final" (nothing per step) or
  "train" (h, c and the gates), with `backward_pass` at ``setup_for(hidden)``."""

  def inference(*args):
    (hs,), state, _ = run_forward("sequence", *args)
    batch, hidden = args[2].shape
    return hs[:batch, 1:, :hidden], state

  def final_state(*args):
    _, state, _ = run_forward("final", *args)
    return state

  def forward(*args):
    (hs, cs, gates), state, residuals = run_forward("train", *args)
    batch, hidden = args[2].shape
    outputs = hs[:batch, 1:, :hidden]
    return (outputs, state), (*residuals, hs, cs, gates, args[0]["recurrent_kernel"], args[5])

  def backward(residuals, d_outputs, dh_last, dc_last):
    return backward_pass(setup_for(dh_last.shape[1]), residuals, d_outputs, dh_last, dc_last)

  return hoisted.with_return_sequences(inference, final_state, forward, backward)


def backward_pass(setup: _Setup, residuals, d_outputs, dh_last, dc_last):
  """The backward kernel and the hoisted gradients around it: `make_lstm`'s backward, for ``residuals``
  (its forward's: padded params, input rows, step mask, state, h, c, gates, U, the input dropout mask)
  laid out in whole 64-row blocks whatever forward wrote them."""
  padded, input_rows, mask, state, hs, cs, gates, recurrent_kernel, input_dropout_mask = residuals
  rows, steps = mask.shape
  batch, hidden = dh_last.shape
  recurrent_mask = state[2]
  cotangents = _padded_states([dh_last, dc_last], rows)
  inputs = [gates, cs, mask, jnp.concatenate([cotangents, recurrent_mask[None]])]
  inputs.append(_weights(recurrent_kernel, setup, "backward"))
  if d_outputs is not None:
    inputs.append(hoisted.pad_to(d_outputs.astype(jnp.float32), (rows, steps, PADDED_HIDDEN)))
  dz, final = _launch(
    functools.partial(_backward_kernel, per_step_cotangent=d_outputs is not None),
    setup,
    rows // BLOCK_BATCH,
    [
      jax.ShapeDtypeStruct((rows, steps, GATES * PADDED_HIDDEN), jnp.float32),
      jax.ShapeDtypeStruct((2, rows, PADDED_HIDDEN), jnp.float32),
    ],
    "backward",
    *inputs,
  )
  # The hoisted weight gradients: every step's contribution in one matmul each, over [Bp * T] rows.
  dz_rows = dz.reshape(rows * steps, GATES * PADDED_HIDDEN)
  h_prev_rows = (hs[:, :steps] * recurrent_mask[:, None, :]).reshape(rows * steps, PADDED_HIDDEN)
  d_params = {
    "kernel": _crop_gates(_contract_rows(input_rows, dz_rows), hidden),
    "recurrent_kernel": _crop_gates(_contract_rows(h_prev_rows, dz_rows)[:hidden], hidden),
    "bias": _crop_gates(dz_rows.sum(axis=0), hidden),
  }
  d_rows = jax.lax.dot_general(
    dz_rows, padded["kernel"], (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST
  )
  d_xs = d_rows.reshape(rows, steps, -1)[:batch] * input_dropout_mask[:, None, :]
  return d_params, d_xs, final[0, :batch, :hidden], final[1, :batch, :hidden]


def _padded_params(params, hidden: int):
  """W [E, 4H], U [H, 4H], b [4H] -> [E, 4 Hp], [Hp, 4 Hp], [4 Hp]: each gate's units zero-padded to Hp."""
  padded = {key: _pad_gates(value, hidden) for key, value in params.items()}
  padded["recurrent_kernel"] = hoisted.pad_to(
    padded["recurrent_kernel"], (PADDED_HIDDEN, GATES * PADDED_HIDDEN)
  )
  return {key: value.astype(jnp.float32) for key, value in padded.items()}


def _pad_gates(x, hidden: int):
  """[..., 4H] -> [..., 4 Hp], each gate's H units at the start of its Hp."""
  planes = _gate_planes(x, hidden)
  return hoisted.pad_to(planes, (*planes.shape[:-1], PADDED_HIDDEN)).reshape(*x.shape[:-1], -1)


def _crop_gates(x, hidden: int):
  """The inverse of `_pad_gates`: [..., 4 Hp] -> [..., 4H]."""
  return x.reshape(*x.shape[:-1], GATES, PADDED_HIDDEN)[..., :hidden].reshape(*x.shape[:-1], GATES * hidden)


def _padded_states(arrays, rows: int):
  """[B, H] arrays -> [len(arrays), Bp, Hp] f32, zero-padded."""
  return hoisted.pad_to(jnp.stack(arrays).astype(jnp.float32), (len(arrays), rows, PADDED_HIDDEN))


def _contract_rows(a, b):
  """a^T b over their rows ([R, X], [R, Y] -> [X, Y]) as one dot, with no transposed copy of a."""
  return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)


def _product(a, b, pieces: int):
  """a @ b as the kernels compute it: bf16 pieces of both operands, float32 sums (see `_products`)."""
  a_pieces, b_pieces = _bf16_pieces(a, pieces), _bf16_pieces(b, pieces)
  return sum(
    jnp.matmul(a_pieces[i], b_pieces[j], preferred_element_type=jnp.float32) for i, j in _products(pieces)
  )


def make_reference(
  matmul_precision: str = "float32", *, exp=jnp.exp, rsqrt=jax.lax.rsqrt
) -> hoisted.Recurrence:
  """The plain-JAX version of the kernels' computation, a `hoisted.Recurrence` too.

  The `fused` recurrence with the recurrent products rounded as the kernels round them (`_product`) and
  the kernels' gate formulas (`sigmoid`, `tanh`, from ``exp`` and ``rsqrt``: pass perturbed ones to see
  what the GPU's approximate instructions can do), written as `lax.scan`s over packed [B, 4H] gates: no
  padding, no clusters. The training-accuracy check of a reduced precision uses it on CPU, where it is fast.
  """
  pieces = _PIECES[matmul_precision]
  activations = (
    functools.partial(sigmoid, exp=exp, rsqrt=rsqrt),
    functools.partial(tanh, exp=exp, rsqrt=rsqrt),
  )
  return hoisted.scan_recurrence(lambda a, b: _product(a, b, pieces), activations=activations)


@functools.cache
def _lstm_for(matmul_precision: str):
  reason = unavailable_reason()
  if reason is not None:
    raise ConfigError(reason)
  # The layout `mosaic_cost` ranks first ("units": this module's kernels; "batch": `mosaic_split`'s), at
  # the default cluster size. Imported here: mosaic_cost imports this module.
  from seqclf.rnn.engines import mosaic_cost

  layout, _ = mosaic_cost.best(matmul_precision)
  return mosaic_cost.LAYOUTS[layout].make_lstm(matmul_precision)


def lstm(
  params,
  xs,
  h0,
  c0,
  step_mask,
  input_dropout_mask,
  recurrent_dropout_mask,
  *,
  matmul_precision="float32",
  return_sequences=True,
):
  """The engine: the kernels inside `hoisted`'s custom VJP; see `seqclf.rnn.lstm` for the contract."""
  run = _lstm_for(matmul_precision)
  args = (params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)
  return run(*args, return_sequences=return_sequences)

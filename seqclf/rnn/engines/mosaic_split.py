"""The ``mosaic`` engine's batch-split forward: 16-row batch blocks, one cluster of N CTAs each.

`mosaic_gpu`'s kernels give a cluster 64 batch rows (wgmma's M) and every CTA all of h each step. Here a
cluster holds 16 rows, wgmma's N: CTA j computes z^T [4 Hs, 16] = U_j^T [4 Hs, Hp] x h^T [Hp, 16], the
four gates of its Hs = Hp / N units on M (64 rows at N = 8) and the batch rows on N, so a CTA receives
16 rows of h a step instead of 64 and its gate arithmetic covers 16 x Hs elements instead of 64 x Hs.
U_j^T stays in shared memory for the whole loop. The accumulator holds gate g in rows g Hs .. (g + 1)
Hs, one warp's rows at N = 8, so the four gates of an element sit in different threads: one round trip
through shared memory regroups them (the accumulator stored, each gate read back transposed as [16,
Hs]). The gate arithmetic, the loads of xw and the stores of h, c and the gates work on batch-major
[16, Hs] planes in the model's own layouts, as `mosaic_gpu`'s do.

The exchange is `mosaic_gpu`'s all-gather: each CTA's h slice, [16, Hs] in bf16 pieces, lands in every
CTA's [N, pieces, 16, Hs] buffer, the B operand of N wgmmas (one per sender's K slice). Its remote stores
need the tiled layout a swizzled buffer takes, which jax 0.11's Mosaic GPU cannot convert the strided
planes of the gate arithmetic to in registers, so h goes through a second small shared-memory stage
first, read back whole: one store call per target carries every piece. As in `mosaic_gpu`, a step sends
before it stores its planes and waits after, and the kernel ends on a cluster barrier. Pallas's
automatic barriers stay on: threads read back what others stored to shared memory (the accumulator's
copy, the stage).

Training runs this forward (storing h, c and the gates in the layouts `mosaic_gpu`'s backward reads)
and `mosaic_gpu`'s backward kernel, whose clusters split the hidden units of 64-row blocks: a
batch-split backward (dh^T = U dz^T, a reduce-scatter of [Hs, 16] shares) is not built, so the batch is
padded to whole 64-row blocks for both passes. `make_reference` is `mosaic_gpu`'s: the products and gate
formulas round the same way. Design and cost: docs/kernels.md.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from seqclf.errors import ConfigError
from seqclf.rnn.cells import matmul
from seqclf.rnn.engines import hoisted, mosaic_gpu
from seqclf.rnn.engines.mosaic_gpu import (
  BLOCK_BATCH,
  FORWARD_STORES,
  GATES,
  PADDED_HIDDEN,
  SMEM_BUDGET_BYTES,
  WARPGROUP_THREADS,
  _bf16_pieces,
  _products,
  _Setup,
  sigmoid,
  tanh,
)

# Batch rows of one cluster: wgmma's N.
SPLIT_ROWS = 16
# Cluster sizes: Hs = 128 / N units a CTA, the four gates' 4 Hs rows a multiple of wgmma's M = 64.
CLUSTER_SIZES = (1, 2, 4, 8)
# The forward's exchange slots: always two (the buffers are small), so no second barrier a step.
SLOTS = 2


def _plane_layout(width: int):
  """The gate arithmetic's [16, Hs] f32 planes: one element at a time, the layout in which a plane can be
  read transposed from the accumulator's rows and loaded from or stored to a window of a global array."""
  return plgpu.Layout.WG_STRIDED((SPLIT_ROWS, width), vec_size=1)


def _send_layout():
  """The tiled layout of a [16, Hs] bf16 slice of h that the swizzled exchange buffer takes: a [16, 16]
  tile per 16 units, warp w holding rows 4w .. 4w + 3, lane l row l // 8 of those and 2 units from 2 (l % 8)."""
  return plgpu.Layout.TILED(
    plgpu.Tiling(((SPLIT_ROWS, 16), (4, 16), (2,))), warp_dims=(-5,), lane_dims=(-3, -2), vector_dim=-1
  )


def _fixed_bytes(cluster_size: int, pieces: int) -> int:
  """Shared memory for the whole loop: U_j^T in bf16 pieces, the [4 Hs, 16] f32 accumulator's copy, the
  send stage [pieces, 16, Hs] bf16."""
  width = PADDED_HIDDEN // cluster_size
  return (
    pieces * GATES * width * PADDED_HIDDEN * 2
    + GATES * width * SPLIT_ROWS * 4
    + pieces * SPLIT_ROWS * width * 2
  )


def _buffer_bytes(pieces: int) -> int:
  """One exchange slot: h [16, Hp] in bf16 pieces."""
  return pieces * SPLIT_ROWS * PADDED_HIDDEN * 2


def fits(cluster_size: int, matmul_precision: str) -> bool:
  """Whether the batch-split forward (two slots) and `mosaic_gpu`'s backward fit a CTA's shared memory."""
  pieces = mosaic_gpu._PIECES[matmul_precision]
  forward = _fixed_bytes(cluster_size, pieces) + SLOTS * _buffer_bytes(pieces) <= SMEM_BUDGET_BYTES
  return forward and mosaic_gpu.exchange_slots(cluster_size, pieces, "backward") > 0


def _scratch(setup: _Setup):
  """The forward's scratch, in the order `_forward_kernel` unpacks it."""
  n, width, pieces = setup.cluster_size, setup.slice_width, setup.pieces
  gmem = setup.exchange == "gmem"
  weights = plgpu.SMEM((pieces * n, GATES * width, width), jnp.bfloat16, transforms=mosaic_gpu._tiled(width))
  return [
    weights,
    plgpu.SMEM((SLOTS, n, pieces, SPLIT_ROWS, width), jnp.bfloat16, transforms=mosaic_gpu._tiled(width)),
    # One store call per sender carrying every piece, each arriving once per thread.
    plgpu.Barrier(num_barriers=SLOTS, num_arrivals=WARPGROUP_THREADS * n),
    plgpu.SMEM((GATES * width, SPLIT_ROWS), jnp.float32),  # the accumulator's copy
    plgpu.SMEM((pieces, SPLIT_ROWS, width), jnp.bfloat16),  # the send stage
    [plgpu.Barrier(num_barriers=n, num_arrivals=1)] if gmem else [],
    plgpu.ClusterBarrier(collective_axes=("cluster",)),
    plgpu.Barrier(num_arrivals=weights.shape[0]),
  ]


class _Exchange:
  """The all-gather of h: CTA ``cta``'s [16, Hs] slice in bf16 pieces into slot ``index % 2``, sender
  ``cta``, of every CTA's [2, N, pieces, 16, Hs] buffer; two slots by step parity, so no second barrier
  (as `mosaic_gpu._Exchange.gather`: a slot is written again only after every CTA's next send)."""

  def __init__(self, setup, buffer, ready, stage, exchange_gmem, copies, cluster_barrier):
    self.setup, self.buffer, self.ready, self.stage = setup, buffer, ready, stage
    self.exchange_gmem, self.copies, self.cluster_barrier = exchange_gmem, copies, cluster_barrier

  def send(self, index, h, cta):
    """Stages CTA ``cta``'s h slice for step ``index`` and issues it to every CTA's buffer ("dsmem"; "local"
    stores it, "gmem" sends in `receive`). Apart from `receive` so that a step issues its send first and
    stores its planes to global memory while the remote stores travel."""
    setup, slot = self.setup, index % SLOTS
    for piece, value in enumerate(_bf16_pieces(h, setup.pieces)):
      self.stage[piece] = value
    if setup.exchange == "gmem":
      return
    # Every piece in the [16, 16]-tile layout at once: one store call per target carries them all (a
    # receiver counts N x 128 arrivals a step, not N x pieces x 128; `mosaic_gpu.send_slice`).
    tiled = plgpu.load(self.stage, layout=_send_layout(), optimized=False)
    if setup.exchange == "local":
      self.buffer[slot, 0] = tiled
      return
    for target in range(setup.cluster_size):
      plgpu.async_store_smem(
        tiled, self.buffer.at[slot, cta], self.ready.at[slot], cluster_idx=target, cluster_dim="cluster"
      )

  def receive(self, index, block, cta):
    """Returns once every CTA's h slice for step ``index`` is in this CTA's buffer, ordered before the
    tensor cores' reads."""
    setup, slot = self.setup, index % SLOTS
    if setup.exchange == "local":
      plgpu.commit_smem()  # before the tensor cores' (async proxy) reads
      return
    if setup.exchange == "dsmem":
      plgpu.barrier_wait(self.ready.at[slot])
      # The reader is this CTA's wgmma (async proxy), the writers other SMs' st.async: the reader's fence.
      plgpu.commit_smem()
      return
    # "gmem": through global memory and a cluster barrier (what the interpreter runs), two global slots by
    # step parity as `mosaic_gpu._Exchange.gather`'s.
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(self.stage, self.exchange_gmem.at[block, slot, cta])
    plgpu.wait_smem_to_gmem(0)
    plgpu.barrier_arrive(self.cluster_barrier)
    plgpu.barrier_wait(self.cluster_barrier)
    for owner in range(setup.cluster_size):
      plgpu.copy_gmem_to_smem(
        self.exchange_gmem.at[block, slot, owner], self.buffer.at[slot, owner], self.copies.at[owner]
      )
    for owner in range(setup.cluster_size):
      plgpu.barrier_wait(self.copies.at[owner])

  def gather(self, index, h, block, cta):
    """`send` then `receive`."""
    self.send(index, h, cta)
    self.receive(index, block, cta)

  def finish(self):
    """Before the CTA exits: a cluster barrier, so that no CTA leaves while a remote store it issued, or
    one into its shared memory, may be in flight (as `mosaic_gpu._Exchange.finish`)."""
    if self.setup.exchange == "dsmem":
      plgpu.barrier_arrive(self.cluster_barrier)
      plgpu.barrier_wait(self.cluster_barrier)


def _gate_products(setup: _Setup, buffer, weights_smem, z_smem):
  """z^T [4 Hs, 16] = U_j^T h^T as N wgmmas per product (sender k's K slice of h), then regrouped: the four
  [16, Hs] gate planes, read back transposed from shared memory."""
  n, width = setup.cluster_size, setup.slice_width

  def run(accumulator):
    for piece, weight_piece in _products(setup.pieces):
      for sender in range(n):
        plgpu.wgmma(
          accumulator, weights_smem.at[weight_piece * n + sender], buffer.at[sender, piece].transpose((1, 0))
        )
    plgpu.wgmma_wait(0)
    return accumulator[...]

  z_smem[...] = pl.run_scoped(run, plgpu.ACC((GATES * width, SPLIT_ROWS), jnp.float32))
  return [
    plgpu.load(
      z_smem.at[pl.ds(gate * width, width), :].transpose((1, 0)), layout=_plane_layout(width), optimized=False
    )
    for gate in range(GATES)
  ]


class _Window:
  """CTA ``cta``'s [16, Hs] windows of cluster ``block``'s rows in the model's layouts (`mosaic_gpu._Window`'s)."""

  def __init__(self, block, cta, width):
    self.rows = pl.ds(pl.multiple_of(block * SPLIT_ROWS, SPLIT_ROWS), SPLIT_ROWS)
    self.cta, self.width = cta, width

  def _index(self, t, gate, columns):
    columns = (
      columns
      if columns is not None
      else mosaic_gpu._columns(gate * PADDED_HIDDEN + self.cta * self.width, self.width)
    )
    return (self.rows, columns) if t is None else (self.rows, t, columns)

  def load(self, ref, t=None, gate=0, columns=None):
    return plgpu.load(
      ref.at[self._index(t, gate, columns)], layout=_plane_layout(self.width), optimized=False
    )

  def store(self, ref, value, t=None, gate=0):
    mosaic_gpu._store(ref.at[self._index(t, gate, None)], value)


def _forward_kernel(xw_gmem, mask_gmem, state_gmem, weights_gmem, *refs, setup, stores):
  """One cluster's 16-row block of the forward. Inputs: xw [Bp, T, 4 Hp], the step mask as [Bp, T, Hs]
  planes, the state [3, Bp, Hp] (h0, c0, recurrent dropout mask), U^T's slices [N, pieces * N, 4 Hs, Hs].
  ``refs``: the final state [2, Bp, Hp], the arrays `FORWARD_STORES` names, the exchange's global buffer,
  the scratch."""
  planes = len(FORWARD_STORES[stores])
  final_gmem, outputs, exchange_gmem = refs[0], refs[1 : 1 + planes], refs[1 + planes]
  weights_smem, buffer, ready, z_smem, stage, copies, cluster_barrier, loaded = refs[2 + planes :]
  block, cta = jax.lax.axis_index("batch"), jax.lax.axis_index("cluster")
  for index in range(weights_smem.shape[0]):
    plgpu.copy_gmem_to_smem(weights_gmem.at[cta, index], weights_smem.at[index], loaded)
  plgpu.barrier_wait(loaded)
  if setup.exchange == "dsmem":
    # Every CTA's barriers exist before anyone stores into its shared memory.
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)
  exchange = _Exchange(
    setup, buffer, ready, stage, exchange_gmem, copies[0] if copies else None, cluster_barrier
  )
  width = setup.slice_width
  window = _Window(block, cta, width)
  steps = xw_gmem.shape[1]
  h0, c0, recurrent_mask = (window.load(state_gmem.at[plane]) for plane in range(3))
  arrays = dict(zip(FORWARD_STORES[stores], outputs))
  for name, value in (("h", h0), ("c", c0)):
    if name in arrays:
      window.store(arrays[name], value, 0)
  exchange.gather(0, h0 * recurrent_mask, block, cta)

  def load(t):
    return [window.load(xw_gmem, t, gate) for gate in range(GATES)] + [
      window.load(mask_gmem, t, columns=pl.ds(0, width))
    ]

  def body(index, t, inputs, carry):
    h, c = carry
    xw, keep = inputs[:GATES], inputs[GATES] > 0.5
    products = _gate_products(setup, buffer.at[index % SLOTS], weights_smem, z_smem)
    z = [x + p for x, p in zip(xw, products)]
    i, f, g, o = sigmoid(z[0]), sigmoid(z[1]), tanh(z[2]), sigmoid(z[3])
    c_new = jnp.where(keep, f * c + i * g, c)
    h_new = jnp.where(keep, o * tanh(c_new), h)

    # The next step's send first, then this step's plane stores while it travels, then its wait.
    @pl.when(index + 1 < steps)
    def _send():
      exchange.send(index + 1, h_new * recurrent_mask, cta)

    for name, value in (("h", h_new), ("c", c_new)):
      if name in arrays:
        window.store(arrays[name], value, t + 1)
    if "gates" in arrays:
      for gate, value in enumerate((i, f, g, o)):
        window.store(arrays["gates"], value, t, gate)

    @pl.when(index + 1 < steps)
    def _receive():
      exchange.receive(index + 1, block, cta)

    return h_new, c_new

  h, c = mosaic_gpu._time_loop(steps, load, body, (h0, c0), reverse=False)
  window.store(final_gmem.at[0], h)
  window.store(final_gmem.at[1], c)
  exchange.finish()


def _weights(recurrent_kernel, setup: _Setup):
  """U [H, 4H] -> [N, pieces * N, 4 Hs, Hs] bf16: [j, piece p, sender k][g Hs + u, m] = U[k Hs + m,
  gate g unit j Hs + u], CTA j's rows of U^T cut into the K slices of h each sender's share meets."""
  n, width = setup.cluster_size, setup.slice_width
  hidden = recurrent_kernel.shape[0]
  u = hoisted.pad_to(mosaic_gpu._gate_planes(recurrent_kernel, hidden), (PADDED_HIDDEN, GATES, PADDED_HIDDEN))
  u = u.reshape(n, width, GATES, n, width).transpose(3, 0, 2, 4, 1)  # [j, k, g, u, m]
  pieces = jnp.stack(_bf16_pieces(u.astype(jnp.float32), setup.pieces), axis=1)
  return pieces.reshape(n, setup.pieces * n, GATES * width, width)


def _launch_forward(setup: _Setup, stores: str, rows: int, xw, mask_planes, state, weights):
  blocks = rows // SPLIT_ROWS
  n, width = setup.cluster_size, setup.slice_width

  def planes(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)

  shapes = {"h": (rows, xw.shape[1] + 1, PADDED_HIDDEN), "c": (rows, xw.shape[1] + 1, PADDED_HIDDEN)}
  shapes["gates"] = (rows, xw.shape[1], GATES * PADDED_HIDDEN)
  exchange = (
    jax.ShapeDtypeStruct((blocks, SLOTS, n, setup.pieces, SPLIT_ROWS, width), jnp.bfloat16)
    if setup.exchange == "gmem"
    else jax.ShapeDtypeStruct((1,), jnp.float32)
  )
  call = plgpu.kernel(
    functools.partial(_forward_kernel, setup=setup, stores=stores),
    out_type=(
      planes(2, rows, PADDED_HIDDEN),
      *[planes(*shapes[name]) for name in FORWARD_STORES[stores]],
      exchange,
    ),
    scratch_types=_scratch(setup),
    grid=(blocks,),
    grid_names=("batch",),
    cluster=(n,),
    cluster_names=("cluster",),
    # Lane semantics: every plane's layout is the one its load names. jax 0.11's layout inference (the
    # default, warpgroup semantics) runs out of search before placing the accumulator's shared-memory
    # copy, which is stored in the wgmma layout and read back transposed in the planes'.
    compiler_params=plgpu.CompilerParams(approx_math=True, lowering_semantics=plgpu.LoweringSemantics.Lane),
    interpret=plgpu.InterpretGPUParams() if setup.interpret else None,
  )
  return call(xw, mask_planes, state, weights)[:-1]


def make_lstm(
  matmul_precision: str = "float32",
  *,
  cluster_size: int | None = None,
  exchange: str | None = None,
  interpret: bool | None = None,
) -> Callable:
  """The engine function with the batch-split forward (options as `mosaic_gpu.make_lstm`'s); training's
  backward is `mosaic_gpu`'s kernel at the same cluster size."""
  if matmul_precision not in mosaic_gpu.MATMUL_PRECISIONS:
    raise ConfigError(
      f"unknown matmul_precision {matmul_precision!r} for the mosaic LSTM engine; "
      f"choose one of: {', '.join(mosaic_gpu.MATMUL_PRECISIONS)}"
    )
  if cluster_size is not None and cluster_size not in CLUSTER_SIZES:
    raise ConfigError(f"cluster_size must be one of {CLUSTER_SIZES}, got {cluster_size}")
  if exchange is not None and exchange not in mosaic_gpu.EXCHANGES:
    raise ConfigError(f"exchange must be one of {', '.join(mosaic_gpu.EXCHANGES)}, got {exchange!r}")
  pieces = mosaic_gpu._PIECES[matmul_precision]

  def setup_for(hidden: int) -> _Setup:
    if hidden > PADDED_HIDDEN:
      raise ConfigError(f"the mosaic LSTM engine handles hidden sizes up to {PADDED_HIDDEN}, got {hidden}")
    run_interpreted = hoisted.interpret() if interpret is None else interpret
    size = cluster_size or (
      mosaic_gpu.INTERPRET_CLUSTER_SIZE if run_interpreted else mosaic_gpu.DEFAULT_CLUSTER_SIZE
    )
    if not run_interpreted and not fits(size, matmul_precision):
      raise ConfigError(
        f"the batch-split kernels with matmul_precision {matmul_precision!r} and cluster_size {size} exceed "
        f"{SMEM_BUDGET_BYTES // 1024} KiB of shared memory a CTA"
      )
    mode = mosaic_gpu.exchange_mode(size, exchange, run_interpreted)
    return _Setup(cluster_size=size, pieces=pieces, exchange=mode, interpret=run_interpreted)

  def prepare(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
    """As `mosaic_gpu.make_lstm`'s, the batch padded to whole 64-row blocks (the backward's), and the step
    mask broadcast to [Bp, T, Hs] planes (a [16] column cannot be broadcast in the planes' layout)."""
    batch, steps, input_size = xs.shape
    hidden = h0.shape[-1]
    setup = setup_for(hidden)
    rows = pl.cdiv(batch, BLOCK_BATCH) * BLOCK_BATCH
    padded = mosaic_gpu._padded_params(params, hidden)
    dropped = hoisted.pad_to(xs * input_dropout_mask[:, None, :], (rows, steps, input_size))
    input_rows = dropped.reshape(rows * steps, input_size)
    xw = (matmul(input_rows, padded["kernel"]) + padded["bias"]).reshape(rows, steps, GATES * PADDED_HIDDEN)
    mask = hoisted.pad_to(step_mask.astype(jnp.float32), (rows, steps))
    mask_planes = jnp.broadcast_to(mask[:, :, None], (rows, steps, setup.slice_width))
    state = mosaic_gpu._padded_states([h0, c0, recurrent_dropout_mask], rows)
    return setup, padded, input_rows, xw, mask, mask_planes, state

  def run_forward(stores, *args):
    setup, padded, input_rows, xw, mask, mask_planes, state = prepare(*args)
    weights = _weights(args[0]["recurrent_kernel"], setup)
    final, *outputs = _launch_forward(setup, stores, mask.shape[0], xw, mask_planes, state, weights)
    batch, hidden = args[2].shape
    residuals = (padded, input_rows, mask, state)
    return outputs, (final[0, :batch, :hidden], final[1, :batch, :hidden]), residuals

  return mosaic_gpu.engine_over(run_forward, setup_for)

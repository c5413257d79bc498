"""The `mosaic` engine's exchange alone, and a cluster ping-pong: the first kernels to run on a Hopper GPU.

`exchange`: one cluster of N CTAs runs the forward's all-gather of h (`mosaic_gpu.send_slice`, the
receiver's mbarrier wait, the proxy fence) for T steps and nothing else, so its time per step is the
exchange term of `seqclf.rnn.engines.mosaic_cost` measured. Two call patterns (`PATTERNS`):
"per_piece", one `async_store_smem` call per target and bf16 piece, as the forward kernel sent before
it carried hi and lo together (2 N calls a step in float32, each arriving 128 times on its receiver),
and "per_target", the kernel's own, one call per target (N calls).

`pingpong`: a ring over one cluster of N CTAs, a handful of rounds, that uses each piece of hardware the
kernels rely on: a TMA copy completing on an mbarrier, a wgmma from shared memory, remote stores into
the next CTA's shared memory (DSMEM) arriving on its mbarrier, and cluster barriers. Its result is
exact (small integers in bf16), so a wrong answer is a broken path, and a hang is a deadlock: a GPU
check runs it in its own process under a short limit before any other cluster kernel.

The Mosaic GPU interpreter has no remote shared-memory stores (jax 0.11's runs no `async_store_smem`),
so off a GPU both are only lowered for CUDA (`seqclf.lowering`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_gpu
from seqclf.rnn.engines.mosaic_gpu import BLOCK_BATCH, PADDED_HIDDEN, WARPGROUP_THREADS

PATTERNS = ("per_piece", "per_target")
# Why neither kernel runs off a GPU.
INTERPRETER_REASON = "the Mosaic GPU interpreter has no remote shared-memory stores (async_store_smem)"
# The ping-pong's tile: [64, 64] bf16, one wgmma with an identity B.
TILE = 64


def _check(cluster_size: int):
  if cluster_size not in mosaic_gpu.CLUSTER_SIZES or cluster_size == 1:
    sizes = ", ".join(str(n) for n in mosaic_gpu.CLUSTER_SIZES if n > 1)
    raise ConfigError(f"the exchange needs a cluster of {sizes} CTAs, got {cluster_size}")


def calls_per_step(pattern: str, cluster_size: int, pieces: int) -> int:
  """`async_store_smem` calls a CTA issues per step; each arrives `WARPGROUP_THREADS` times at its target."""
  if pattern not in PATTERNS:
    raise ConfigError(f"unknown exchange pattern {pattern!r}; choose one of: {', '.join(PATTERNS)}")
  return cluster_size * (pieces if pattern == "per_piece" else 1)


def exchange(cluster_size: int, pieces: int, steps: int, pattern: str):
  """The N-CTA all-gather of a [64, Hs] f32 slice per CTA in bf16 pieces, ``steps`` times.

  Returns a function of slices [N, 64, Hs] f32 -> every CTA's buffer after the last step, [N, pieces * 64,
  Hp] bf16: step s sends slice + s, so each buffer holds the pieces of slices + (steps - 1) (`expected`).
  """
  _check(cluster_size)
  calls = calls_per_step(pattern, cluster_size, pieces)
  width = PADDED_HIDDEN // cluster_size
  rows = pieces * BLOCK_BATCH

  def kernel(slices_gmem, out_gmem, buffer, ready, cluster_barrier):
    cta = jax.lax.axis_index("cluster")
    h = plgpu.load(slices_gmem.at[cta], layout=plgpu.Layout.WGMMA, optimized=False)
    # Every CTA's barriers exist before anyone stores into its shared memory.
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)

    def step(index, carry):
      slot = index % 2
      pieces_of = mosaic_gpu._bf16_pieces(h + index.astype(jnp.float32), pieces)
      if pattern == "per_target":
        mosaic_gpu.send_slice(
          jnp.concatenate(pieces_of, axis=0), buffer.at[slot], ready.at[slot], cta, cluster_size, width
        )
      else:
        columns = pl.ds(pl.multiple_of(cta * width, width), width)
        for target in range(cluster_size):
          for piece, value in enumerate(pieces_of):
            plgpu.async_store_smem(
              value,
              buffer.at[slot, pl.ds(piece * BLOCK_BATCH, BLOCK_BATCH), columns],
              ready.at[slot],
              cluster_idx=target,
              cluster_dim="cluster",
            )
      plgpu.barrier_wait(ready.at[slot])
      plgpu.commit_smem()  # as the forward orders the landed data before its wgmma
      return carry

    # Two slots: a CTA stores into a slot again two steps on, after its wait of the step between,
    # which needs every CTA's send of that step, made after its own wait on this slot.
    jax.lax.fori_loop(0, steps, step, 0)
    plgpu.copy_smem_to_gmem(buffer.at[(steps - 1) % 2], out_gmem.at[cta])
    plgpu.wait_smem_to_gmem(0)
    # No CTA exits while a store it issued, or one into its shared memory, may be in flight.
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)

  return plgpu.kernel(
    kernel,
    out_type=jax.ShapeDtypeStruct((cluster_size, rows, PADDED_HIDDEN), jnp.bfloat16),
    scratch_types=[
      plgpu.SMEM((2, rows, PADDED_HIDDEN), jnp.bfloat16, transforms=mosaic_gpu._tiled(width)),
      plgpu.Barrier(num_barriers=2, num_arrivals=WARPGROUP_THREADS * calls),
      plgpu.ClusterBarrier(collective_axes=("cluster",)),
    ],
    grid=(1,),
    grid_names=("batch",),
    cluster=(cluster_size,),
    cluster_names=("cluster",),
    # No thread reads and writes one region, and the buffer's writers are remote stores: see
    # `mosaic_gpu._needs_auto_barriers`.
    compiler_params=plgpu.CompilerParams(unsafe_no_auto_barriers=True),
  )


def exchange_inputs(cluster_size: int) -> jax.Array:
  """Each CTA's [64, Hs] f32 slice, distinct small values."""
  width = PADDED_HIDDEN // cluster_size
  return jnp.arange(cluster_size * BLOCK_BATCH * width, dtype=jnp.float32).reshape(
    cluster_size, BLOCK_BATCH, width
  ) / (BLOCK_BATCH * width)


def exchange_expected(slices, pieces: int, steps: int) -> np.ndarray:
  """What every CTA's buffer holds after `exchange`: the pieces of every slice + (steps - 1), side by side."""
  h = jnp.concatenate(list(jnp.asarray(slices) + (steps - 1)), axis=1)  # [64, Hp]
  one = jnp.concatenate(mosaic_gpu._bf16_pieces(h, pieces), axis=0)
  return np.broadcast_to(np.asarray(one), (len(slices), *one.shape))


def pingpong(cluster_size: int, rounds: int):
  """A ring over a cluster of N CTAs for ``rounds`` rounds: CTA j loads its [64, 64] bf16 tile and an
  identity by TMA (mbarrier), and each round multiplies its tile by the identity on the tensor cores
  (wgmma), adds 1 and stores it into CTA j + 1's shared memory (DSMEM, its mbarrier), between cluster
  barriers. Returns a function of tiles [N, 64, 64] bf16 -> [N, 64, 64] f32, `pingpong_expected`."""
  _check(cluster_size)

  def kernel(tiles_gmem, identity_gmem, out_gmem, received, identity, loaded, ready, cluster_barrier):
    cta = jax.lax.axis_index("cluster")
    plgpu.copy_gmem_to_smem(tiles_gmem.at[cta], received.at[0], loaded)
    plgpu.copy_gmem_to_smem(identity_gmem, identity, loaded)
    plgpu.barrier_wait(loaded)
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)

    def round_(index, carry):
      slot = index % 2

      def multiply(accumulator):
        plgpu.wgmma(accumulator, received.at[slot], identity)
        plgpu.wgmma_wait(0)
        return accumulator[...]

      value = pl.run_scoped(multiply, plgpu.ACC((TILE, TILE), jnp.float32)) + 1.0
      # Every CTA has read its slot of this round before any CTA stores into the other one.
      plgpu.barrier_arrive(cluster_barrier)
      plgpu.barrier_wait(cluster_barrier)
      plgpu.async_store_smem(
        value.astype(jnp.bfloat16),
        received.at[1 - slot],
        ready.at[1 - slot],
        cluster_idx=(cta + 1) % cluster_size,
        cluster_dim="cluster",
      )
      plgpu.barrier_wait(ready.at[1 - slot])
      plgpu.commit_smem()
      return carry

    jax.lax.fori_loop(0, rounds, round_, 0)
    result = plgpu.load(received.at[rounds % 2], layout=plgpu.Layout.WGMMA, optimized=False)
    out_gmem[cta] = result.astype(jnp.float32)
    plgpu.barrier_arrive(cluster_barrier)
    plgpu.barrier_wait(cluster_barrier)

  return plgpu.kernel(
    kernel,
    out_type=jax.ShapeDtypeStruct((cluster_size, TILE, TILE), jnp.float32),
    scratch_types=[
      plgpu.SMEM((2, TILE, TILE), jnp.bfloat16, transforms=mosaic_gpu._tiled(TILE)),
      plgpu.SMEM((TILE, TILE), jnp.bfloat16, transforms=mosaic_gpu._tiled(TILE)),
      plgpu.Barrier(num_arrivals=2),
      plgpu.Barrier(num_barriers=2, num_arrivals=WARPGROUP_THREADS),
      plgpu.ClusterBarrier(collective_axes=("cluster",)),
    ],
    grid=(1,),
    grid_names=("batch",),
    cluster=(cluster_size,),
    cluster_names=("cluster",),
  )


def pingpong_inputs(cluster_size: int) -> tuple[jax.Array, jax.Array]:
  """(tiles [N, 64, 64] bf16 of small integers, distinct per CTA; the identity [64, 64] bf16)."""
  tiles = (jnp.arange(cluster_size * TILE * TILE) % 61).reshape(cluster_size, TILE, TILE)
  tiles = tiles + jnp.arange(cluster_size)[:, None, None]
  return tiles.astype(jnp.bfloat16), jnp.eye(TILE, dtype=jnp.bfloat16)


def pingpong_expected(tiles, rounds: int) -> np.ndarray:
  """After ``rounds`` rounds CTA j holds the tile CTA j - rounds started with, plus ``rounds`` (exact:
  integers below 256 in bf16)."""
  start = np.asarray(tiles, np.float32)
  return np.roll(start, rounds, axis=0) + rounds


@functools.cache
def lowered_text(kind: str, cluster_size: int) -> str:
  """The kernel lowered for CUDA on this host, as text (what off a GPU proves it builds)."""
  if kind == "pingpong":
    function, args = pingpong(cluster_size, 2), pingpong_inputs(cluster_size)
  else:
    function, args = exchange(cluster_size, 2, 4, kind), (exchange_inputs(cluster_size),)
  return lowering.lower(jax.jit(function), *args, platform="gpu").as_text()

"""The ``mosaic`` engine's cost, predicted as a range: µs per time step of each pass and seconds per article epoch.

Every figure the prediction rests on is a `Term` in `TERMS`: its low and high values, its unit and its
source, one of "specified" (NVIDIA's published figure; ``basis`` names the document), "published" (a
public microbenchmark; ``basis`` names it), "measured" (``basis`` says where) or "assumed" (``basis``
says why). A prediction is made at both ends (`BOUNDS`): "low" takes every term at its fast end, "high"
at its slow end. What the kernels do (planes loaded and stored per step, bytes exchanged, buffer slots,
stores that bring automatic barriers, remote arrivals, what fits) is counted from
`seqclf.rnn.engines.mosaic_gpu` and `mosaic_split` as written, for each layout (`LAYOUTS`): "units",
clusters splitting the hidden units of 64-row blocks, and "batch", 16-row blocks (the forward; its
training runs the "units" backward). A step of one CTA is one warpgroup doing its parts one after
another: the matmul (tensor cores or their shared-memory operand reads, whichever is slower), the gate
arithmetic, the step's global loads and stores, the exchange (forward: the all-gather of h; backward:
the reduce-scatter of the partial dh), the automatic barriers around its stores, the remote arrivals its
barrier receives and, with one buffer slot, a cluster barrier. Around the kernels, XLA's passes (the
hoisted matmuls, the crops of the padding) move their bytes through HBM. Evaluation runs the forward
that stores only the final state.

  python -m seqclf.rnn.engines.mosaic_cost     # the table in docs/kernels.md
"""

import contextlib
import contextvars
import math
from typing import NamedTuple

from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_gpu, mosaic_split
from seqclf.rnn.engines.mosaic_gpu import BLOCK_BATCH, GATES, PADDED_HIDDEN, WARPGROUP_THREADS

SOURCES = ("specified", "published", "measured", "assumed")
# The two ends of a prediction: every term at the end that makes the kernels faster, or slower.
BOUNDS = ("low", "high")
# The kernels of each layout: "units" (`mosaic_gpu`: a cluster splits the hidden units of 64 batch rows)
# and "batch" (`mosaic_split`: 16 batch rows a cluster, forward; training runs `mosaic_gpu`'s backward).
LAYOUTS = {"units": mosaic_gpu, "batch": mosaic_split}


class Term(NamedTuple):
  low: float
  high: float
  unit: str
  source: str  # one of SOURCES
  basis: str  # the document, the measurement, or the reason (for each end where they differ)


def _fixed(value, unit, source, basis) -> Term:
  return Term(value, value, unit, source, basis)


_DATASHEET = "NVIDIA H200 Tensor Core GPU datasheet"
_THROUGHPUT = "CUDA C++ Programming Guide, arithmetic instruction throughput, compute capability 9.0"
_APPROX = "jax's Mosaic GPU lowering with approx_math; not disassembled from these kernels"
_LUO = "Luo et al., Benchmarking and Dissecting the Nvidia Hopper GPU Architecture, arXiv 2402.13499"

TERMS = {
  "sms": _fixed(
    132,
    "SMs",
    "specified",
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper (GH100, SXM5; the H200 is the same GPU)",
  ),
  "fp32_flops": _fixed(67e12, "FLOP/s", "specified", f"{_DATASHEET}, FP32"),
  "bf16_dense_flops": _fixed(
    989e12, "FLOP/s", "specified", f"{_DATASHEET}: BF16 Tensor Core 1,979 TFLOPS with sparsity, half dense"
  ),
  "hbm_bytes_per_s": _fixed(4.8e12, "B/s", "specified", f"{_DATASHEET}, HBM3e bandwidth"),
  "fp32_lanes": _fixed(128, "results/clock/SM", "specified", f"{_THROUGHPUT}: 32-bit add, multiply, FMA"),
  "mufu_lanes": _fixed(16, "results/clock/SM", "specified", f"{_THROUGHPUT}: exp2, reciprocal, ... (MUFU)"),
  "warp_issue": _fixed(
    1,
    "warp instructions/clock/scheduler",
    "specified",
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper: four partitions per SM, one warp scheduler each",
  ),
  "smem_bytes_per_clock": _fixed(
    128, "B/clock/SM", "specified", "CUDA C++ Programming Guide, shared memory: 32 banks of 32 bits a clock"
  ),
  "register_cap": _fixed(
    255,
    "registers/thread",
    "specified",
    "CUDA C++ Programming Guide, technical specifications: 255 32-bit registers per thread",
  ),
  "l2_bytes_per_clock": Term(
    47,
    64,
    "B/clock/SM",
    "assumed",
    "an SM's port to L2, not published for Hopper: A100's whitepaper gives 5120 B/clock over 108 SMs, 47 "
    "each (slow end); 64 (fast end)",
  ),
  "dsmem_bytes_per_clock": Term(
    13,
    17,
    "B/clock/SM",
    "published",
    f"{_LUO}: distributed shared memory 3.27 TB/s at cluster size 2 and 2.65 at 4 over 132 SMs, ~13-17 B a clock each",
  ),
  "exchange_latency_us": Term(
    0.09,
    0.25,
    "µs",
    "published",
    f"{_LUO}: the SM-to-SM network's ~180 cycles (fast end: one hop); the slow end adds the transaction "
    "barrier's completion and the receiver's try_wait poll, assumed, to ~2.5 hops",
  ),
  "cluster_barrier_us": Term(
    0.18,
    0.3,
    "µs",
    "published",
    f"barrier.cluster arrive and wait: two SM-to-SM hops of ~180 cycles ({_LUO}) at the fast end, 0.3 µs "
    "assumed at the slow end",
  ),
  "auto_barrier_clocks": Term(
    20,
    40,
    "clocks/bar.sync",
    "assumed",
    "a bar.sync of the one warpgroup, whose four warps arrive together: about a shared-memory access "
    f"(29 cycles, {_LUO}), not measured",
  ),
  "remote_arrival_clocks": Term(
    0,
    1,
    "clocks/arrival at the receiver",
    "assumed",
    "a remote mbarrier.arrive.expect_tx: hidden behind the data (fast end) or serialised at the "
    "receiver's barrier at one a clock (slow end); not published, not measured",
  ),
  "hbm_efficiency": Term(
    0.6,
    0.8,
    "of the datasheet bandwidth",
    "assumed",
    "XLA's matmuls over [B * T, 32 to 512] rows and its crops of the padding stream below peak",
  ),
  "other_registers": Term(
    30,
    40,
    "registers/thread",
    "assumed",
    "addresses, loop index, predicates, barrier phases beside the planes",
  ),
  "ex2_instructions": _fixed(
    2,
    "instructions",
    "assumed",
    f"exp: ex2.approx.ftz.f32 is one MUFU.EX2 after jax's FMUL by log2(e) ({_APPROX})",
  ),
  "ex2_mufu": _fixed(1, "MUFU instructions", "assumed", f"ex2.approx.ftz.f32 is one MUFU.EX2 ({_APPROX})"),
  "rsqrt_instructions": _fixed(
    1, "instructions", "assumed", f"rsqrt.approx.f32 is one MUFU.RSQ, nothing around it ({_APPROX})"
  ),
  "rsqrt_mufu": _fixed(1, "MUFU instructions", "assumed", f"rsqrt.approx.f32 is one MUFU.RSQ ({_APPROX})"),
  "split_instructions": _fixed(
    3,
    "instructions/element",
    "assumed",
    "`_bf16_pieces` with hi and lo: cvt to bf16x2 (1/2), hi back to f32, subtract, cvt (1/2)",
  ),
  "round_instructions": _fixed(
    0.5,
    "instructions/element",
    "assumed",
    "`_bf16_pieces` with hi only: one cvt.rn.bf16x2.f32 per two elements",
  ),
}
# Terms whose larger value makes the kernels faster (the rest slower, or, for registers, more).
_RATES = {
  "sms",
  "fp32_flops",
  "bf16_dense_flops",
  "hbm_bytes_per_s",
  "fp32_lanes",
  "mufu_lanes",
  "warp_issue",
  "smem_bytes_per_clock",
  "register_cap",
  "l2_bytes_per_clock",
  "dsmem_bytes_per_clock",
  "hbm_efficiency",
}
_BOUND = contextvars.ContextVar("bound", default="high")
# A term held at the other end from the rest (`_at`): how `markdown` finds the term that decides a miss.
_FLIPPED = contextvars.ContextVar("flipped", default=None)
# Design targets (s per article epoch, H200), set against PyTorch's cuDNN LSTM epoch of 1.39 s.
TARGETS = {"float32": 0.9, "bfloat16": 0.6}
# IMDB's train and test splits: 25,000 reviews each; an epoch trains on one and evaluates on the other.
ARTICLE_EXAMPLES = 25_000


def _value(name: str) -> float:
  """A term at the current bound's end: "low" (faster) takes a rate's high value and a cost's low one."""
  term, bound = TERMS[name], _BOUND.get()
  if name == _FLIPPED.get():
    bound = "low" if bound == "high" else "high"
  return term.high if (bound == "low") == (name in _RATES) else term.low


@contextlib.contextmanager
def _at(bound: str, flipped: str | None = None):
  """Evaluates the terms at ``bound``'s end, ``flipped`` (a term's name) at the other."""
  tokens = _BOUND.set(bound), _FLIPPED.set(flipped)
  try:
    yield
  finally:
    _BOUND.reset(tokens[0])
    _FLIPPED.reset(tokens[1])


def _clock_hz() -> float:
  """The SM clock the datasheet's FP32 rate implies: 132 SMs x 128 FMA lanes x 2 FLOP, ~1.98 GHz."""
  return _value("fp32_flops") / (_value("sms") * _value("fp32_lanes") * 2)


def _us(clocks: float) -> float:
  return 1e6 * clocks / _clock_hz()


class Pass(NamedTuple):
  """What one step of a kernel pass moves and computes, per element of the CTA's [rows, Hs] slice."""

  planes_in: int  # [rows, Hs] f32 planes loaded (prefetched a step ahead)
  planes_out: int  # stored from registers
  exchange: str  # `mosaic_gpu._Exchange`'s: "gather" (h, forward) or "reduce_scatter" (partial dh, backward)
  split_planes: int  # planes cut into bf16 pieces: h (sent) forward, dz of each gate (staged) backward
  live_planes: int  # f32 planes live in registers at the gate arithmetic, prefetched inputs included
  plain_ops: int  # FP32 add, multiply, FMA, compare, select, per element
  calls: dict  # approximate instructions per element: {"ex2" | "rsqrt": count}
  rows: int = BLOCK_BATCH  # batch rows of a cluster: 64 ("units"), 16 ("batch")
  global_vector: int = 2  # f32 per global load or store instruction: the wgmma layout's column pairs
  regroup: bool = False  # "batch": the accumulator's copy in shared memory and h's send stage
  # Pallas's automatic warpgroup barriers: kept by the batch-split forward, whose threads read back what
  # others stored to shared memory; `mosaic_gpu`'s kernels turn them off (`_needs_auto_barriers`: "gmem" only)
  auto_barriers: bool = False

  @property
  def kernel_pass(self) -> str:
    """The pass's name in `mosaic_gpu` (`exchange_slots`, `_launch`)."""
    return {"gather": "forward", "reduce_scatter": "backward"}[self.exchange]


# Per element, sigmoid(z) = rsqrt(1 + exp(-z))^2 is an ex2, an rsqrt and 2 plain ops (the add, the
# square; the negation folds into ex2's FMUL); tanh(x) = 2 sigmoid(2x) - 1 is a sigmoid and 2 more (2x,
# 2s - 1).
_SIGMOID_OPS, _TANH_OPS = 2, 2 + 2

# As `mosaic_gpu.make_lstm` builds them. Forward in: xw's 4 gate windows (the step mask is a [64] row,
# 1/Hs of a plane, left out); out: h, c and the 4 gates. Live: the next step's 4 inputs and this step's
# 4, 4 accumulators that become i, f, g, o, h, c and the recurrent mask. 3 sigmoids (i, f, o) and 2 tanh
# (g, c): 5 ex2 and 5 rsqrt. Plain ops: 4 (z = xw + product) + 1 (keep) + 3 (c) + 2 (h) + 1 (h x mask)
# = 11, + 3 x 2 (sigmoids) + 2 x 4 (tanh) = 25.
FORWARD = Pass(
  planes_in=GATES,
  planes_out=2 + GATES,
  exchange="gather",
  split_planes=1,
  live_planes=2 * GATES + GATES + 3,
  plain_ops=11 + 3 * _SIGMOID_OPS + 2 * _TANH_OPS,
  calls={"ex2": 5, "rsqrt": 5},
)
# The forward without a gradient (`mosaic_gpu.FORWARD_STORES`): returning the outputs ("sequence", what
# mosaic_sweep's "fwd" times) it stores h alone; evaluation's, which wants only the final state
# ("final"), stores no per-step planes (the final h and c once: negligible).
SEQUENCE = FORWARD._replace(planes_out=1)
EVALUATION = FORWARD._replace(planes_out=0)
# Backward in: 4 gates, c_t, c_{t-1} (the mask a row again); out: dz of the 4 gates, also staged in bf16
# pieces in shared memory (the wgmmas' A operand). This is the classifier's backward: its LSTM returns
# the final h only, so no step's output has a cotangent to load. Live: the next step's 6 inputs and this
# step's 6, dh, dc and the recurrent mask (15), beside the [64, Hp] accumulator of the partial dh
# (`_registers`). One tanh (of c). Plain ops: 1 (keep) + 4 (dc) + 4 + 4 + 3 + 4 (dz of i, f, g, o) + 4
# (where keep) + 2 (dh_prev) + 2 (dc_prev) = 28, + 4 (tanh) = 32. The sum of the N shares received is the
# exchange's.
BACKWARD = Pass(
  planes_in=GATES + 2,
  planes_out=GATES,
  exchange="reduce_scatter",
  split_planes=GATES,
  live_planes=2 * (GATES + 2) + 3,
  plain_ops=28 + _TANH_OPS,
  calls={"ex2": 1, "rsqrt": 1},
)
# The backward of a loss on every step's output (mosaic_sweep's "fwd_bwd"): one more plane in, dh_t, and
# one more add (dh = dh_next + dh_t).
BACKWARD_SEQUENCES = BACKWARD._replace(
  planes_in=BACKWARD.planes_in + 1,
  live_planes=BACKWARD.live_planes + 2,
  plain_ops=BACKWARD.plain_ops + 1,
)
# `mosaic_split`'s forward: [16, Hs] planes, loaded and stored one f32 at a time (its strided layout); the
# step mask comes as a fifth plane ([Bp, T, Hs], broadcast by XLA); the accumulator is regrouped through
# shared memory and h staged there before its send, so threads read what others stored and Pallas's
# automatic barriers stay.
SPLIT_FORWARD = FORWARD._replace(
  planes_in=GATES + 1,
  live_planes=FORWARD.live_planes + 2,
  rows=mosaic_split.SPLIT_ROWS,
  global_vector=1,
  regroup=True,
  auto_barriers=True,
)
SPLIT_SEQUENCE = SPLIT_FORWARD._replace(planes_out=1)
SPLIT_EVALUATION = SPLIT_FORWARD._replace(planes_out=0)
# Each layout's passes: (training forward, "fwd", evaluation); the backward is `BACKWARD` for both.
_FORWARDS = {
  "units": (FORWARD, SEQUENCE, EVALUATION),
  "batch": (SPLIT_FORWARD, SPLIT_SEQUENCE, SPLIT_EVALUATION),
}


class PassCost(NamedTuple):
  """µs per time step of one pass on one CTA, by part."""

  tensor: float  # the wgmma FLOPs at the SM's dense bf16 rate
  smem_operands: float  # the wgmma operands (A and B) read from shared memory
  gate_math: float  # the elementwise code as written (backward: dz's staging too), one warp per scheduler
  global_io: float  # the step's plane loads and stores: their issue, or their bytes through L2
  exchange: float  # sending (st.async issue or DSMEM bytes) plus latency, and backward the shares' sum
  auto_barriers: float  # the bar.sync Pallas puts before and after each `ref[...] =` store, where kept
  arrivals: float  # the remote barrier arrivals the CTA's barrier receives (one per thread per store call)
  barrier: float  # a cluster barrier per step where only one buffer slot fits

  @property
  def matmul(self) -> float:
    """The tensor cores read their operands while they multiply: the slower of the two."""
    return max(self.tensor, self.smem_operands)

  @property
  def total(self) -> float:
    return sum(getattr(self, part) for part in PARTS)


# The parts of a step in series: one warpgroup does each in turn.
PARTS = ("matmul", "gate_math", "global_io", "exchange", "auto_barriers", "arrivals", "barrier")


def _per_thread(kernel_pass: Pass, cluster_size: int) -> float:
  """Elements of one [rows, Hs] plane each thread holds."""
  return kernel_pass.rows * (PADDED_HIDDEN // cluster_size) / WARPGROUP_THREADS


def _gate_clocks(kernel_pass: Pass, pieces: int) -> float:
  """Clocks of one element's arithmetic per thread: instructions issued, or MUFU or shared-memory
  occupancy if longer."""
  split = _value("split_instructions" if pieces == 2 else "round_instructions")
  issued = kernel_pass.plain_ops + kernel_pass.split_planes * split
  issued += sum(count * _value(f"{op}_instructions") for op, count in kernel_pass.calls.items())
  mufu = sum(count * _value(f"{op}_mufu") for op, count in kernel_pass.calls.items())
  staged_bytes = 0
  if kernel_pass.exchange == "reduce_scatter":
    # dz's bf16 pieces into this CTA's shared memory: one st.shared per bf16x2 register.
    issued += kernel_pass.split_planes * pieces / 2
    staged_bytes = kernel_pass.split_planes * pieces * 2 * WARPGROUP_THREADS
  if kernel_pass.regroup:
    # The 4 gates' accumulator values stored (2 a st.shared.v2) and read back transposed (1 a ld.shared),
    # h's pieces stored to the stage and read back in the send layout (bf16x2 each): 2 + 4 + pieces.
    issued += 2 + GATES + pieces
    staged_bytes = (2 * GATES * 4 + 2 * pieces * 2) * WARPGROUP_THREADS
  # A partition's 32 threads share mufu_lanes / 4 units: one warp MUFU instruction holds them 8 clocks.
  mufu_clocks = mufu * WARPGROUP_THREADS / _value("mufu_lanes")
  return max(issued / _value("warp_issue"), mufu_clocks, staged_bytes / _value("smem_bytes_per_clock"))


def _arrivals(cluster_size: int) -> int:
  """Remote arrivals on a CTA's barrier a step: jax 0.11's `async_store_smem` has each of the 128 threads
  arrive once per store call, and every CTA of the cluster makes one call to each CTA (forward: every
  bf16 piece of h in one, `mosaic_gpu.send_slice` and `mosaic_split._Exchange.send`; backward: its
  share); at N = 1 nothing is remote."""
  return 0 if cluster_size == 1 else cluster_size * WARPGROUP_THREADS


def _smem_stores(kernel_pass: Pass, pieces: int) -> int:
  """`ref[...] =` stores into shared memory a step that bring automatic barriers: the batch-split
  forward's accumulator copy and h's pieces to the send stage."""
  return 1 + pieces if kernel_pass.regroup else 0


def _exchange_us(kernel_pass: Pass, cluster_size: int, pieces: int) -> float:
  """One step's exchange on one CTA: sending, the latency of the remote stores, and the receiver's work."""
  width = PADDED_HIDDEN // cluster_size
  per_thread = _per_thread(kernel_pass, cluster_size)
  rows = kernel_pass.rows
  if kernel_pass.exchange == "gather":
    # Each CTA sends its [rows, Hs] bf16 slice of h's pieces to every CTA, itself included, as one 4-byte
    # store per bf16x2 register per thread; at N = 1 into its own shared memory.
    sent_bytes = cluster_size * kernel_pass.split_planes * pieces * rows * width * 2
    stores = cluster_size * kernel_pass.split_planes * pieces * per_thread / 2
    if cluster_size == 1:
      return _us(max(stores, sent_bytes / _value("smem_bytes_per_clock")))
    return _us(max(stores, sent_bytes / _value("dsmem_bytes_per_clock"))) + _value("exchange_latency_us")
  if cluster_size == 1:  # the one accumulator is dh: nothing to exchange
    return 0.0
  # Each CTA sends its N shares [64, Hs] f32 (64 x Hp x 4 = 32 KiB whatever N), one to each CTA, itself
  # included: an f32 wgmma-layout register pair is one 8-byte st.async. The receiver loads its N shares
  # (ld.shared.v2, or their bytes at the shared-memory rate) and adds them: N - 1 adds per element.
  shares = cluster_size * rows * width * 4
  stores = loads = cluster_size * per_thread / 2
  send = max(stores, shares / _value("dsmem_bytes_per_clock"))
  receive = max(loads, shares / _value("smem_bytes_per_clock")) + (cluster_size - 1) * per_thread
  return _us(send + receive) + _value("exchange_latency_us")


def _pass_cost(kernel_pass: Pass, cluster_size: int, pieces: int, slots: int) -> PassCost:
  width = PADDED_HIDDEN // cluster_size
  rows = kernel_pass.rows
  per_thread = _per_thread(kernel_pass, cluster_size)
  products = len(mosaic_gpu._products(pieces))
  # "units" forward: per product one wgmma [64, Hp] x [Hp, 4 Hs] (G = 2 of [Hp, 2 Hs] at N = 1, wgmma's
  # N being at most 256), so h is read G times. Backward: 4 P wgmmas [64, Hs] x [Hs, Hp] (dz of a gate by
  # its rows of U^T) into one [64, Hp] accumulator. "batch" forward: per product N wgmmas [4 Hs, Hs] x
  # [Hs, 16], U_j^T (A) read whole and h (B) once. The same FLOPs per row either way.
  flops = GATES * products * 2 * rows * PADDED_HIDDEN * width
  if kernel_pass.regroup:
    operand_bytes = products * 2 * (GATES * width * PADDED_HIDDEN + PADDED_HIDDEN * rows)
  elif kernel_pass.exchange == "gather":
    groups = GATES // mosaic_gpu.gates_per_wgmma(width)
    operand_bytes = products * 2 * (groups * rows * PADDED_HIDDEN + GATES * PADDED_HIDDEN * width)
  else:
    operand_bytes = GATES * products * 2 * (rows * width + width * PADDED_HIDDEN)
  io_instructions = (kernel_pass.planes_in + kernel_pass.planes_out) * per_thread / kernel_pass.global_vector
  io_bytes = (kernel_pass.planes_in + kernel_pass.planes_out) * rows * width * 4
  return PassCost(
    tensor=1e6 * flops / (_value("bf16_dense_flops") / _value("sms")),
    smem_operands=_us(operand_bytes / _value("smem_bytes_per_clock")),
    gate_math=_us(per_thread * _gate_clocks(kernel_pass, pieces)),
    global_io=_us(max(io_instructions, io_bytes / _value("l2_bytes_per_clock"))),
    exchange=_exchange_us(kernel_pass, cluster_size, pieces),
    auto_barriers=_us(
      2 * (kernel_pass.planes_out + _smem_stores(kernel_pass, pieces)) * _value("auto_barrier_clocks")
    )
    if kernel_pass.auto_barriers
    else 0.0,
    arrivals=_us(_arrivals(cluster_size) * _value("remote_arrival_clocks")),
    barrier=_value("cluster_barrier_us") if slots == 1 and cluster_size > 1 else 0.0,
  )


def _registers(kernel_pass: Pass, cluster_size: int, pieces: int) -> int:
  """32-bit registers per thread: the live f32 planes; forward, the bf16x2 pieces of h being sent;
  backward, the [64, Hp] f32 accumulator of the partial dh (64 registers whatever N; dz's pieces are in
  shared memory); and the rest."""
  per_thread = int(_per_thread(kernel_pass, cluster_size))
  if kernel_pass.exchange == "gather":
    extra = kernel_pass.split_planes * pieces * max(per_thread // 2, 1)
    if kernel_pass.regroup:  # the [4 Hs, 16] accumulator: 4 Hs x 16 / 128 f32 a thread
      extra += GATES * per_thread
  else:
    extra = cluster_size * per_thread
  return kernel_pass.live_planes * per_thread + extra + int(_value("other_registers"))


def _hbm_us(nbytes: float) -> float:
  return 1e6 * nbytes / (_value("hbm_bytes_per_s") * _value("hbm_efficiency"))


def _xla_bytes(batch: int, steps: int, input_size: int, hidden: int, mask_width: int = 0) -> dict:
  """The bytes XLA's passes around the kernels move per batch, memory-bound at these shapes, by pass.

  The kernels read and write the model's own batch-major layouts, padded to whole 64-row blocks and each
  gate's units to Hp, so what is left is the hoisted matmuls and cropping the padding:
    projection: xs read (and the input dropout applied), xw [Bp, T, 4 Hp] written; the batch-split
      forward's step mask broadcast to [Bp, T, Hs] planes (``mask_width`` = Hs) written;
    outputs: h [Bp, T, Hp] read and cropped to [B, T, H] (the forward that returns them);
    weights: dz [Bp, T, 4 Hp] read by dW's, dU's and dxs' matmuls and the bias sum; h_{t-1} (h's first
      T steps times the recurrent mask) read, written and read; the padded inputs read by dW's matmul; dxs written,
      read, cropped and written;
    cotangent: the outputs' cotangent read and padded to [Bp, T, Hp] (a loss on every step's output).
  """
  rows = math.ceil(batch / BLOCK_BATCH) * BLOCK_BATCH
  plane, padded = steps * batch * 4, steps * rows * 4  # bytes per f32 value per step and row
  return {
    "projection": plane * input_size + padded * (GATES * PADDED_HIDDEN + mask_width),
    "outputs": padded * PADDED_HIDDEN + plane * hidden,
    "weights": padded * (4 * GATES * PADDED_HIDDEN + 3 * PADDED_HIDDEN + 2 * input_size)
    + 3 * plane * input_size,
    "cotangent": plane * hidden + padded * PADDED_HIDDEN,
  }


class Prediction(NamedTuple):
  """One configuration's predicted cost on an H200 at one end of the terms' ranges (`predict`)."""

  layout: str  # `LAYOUTS`
  cluster_size: int
  matmul_precision: str
  bound: str  # `BOUNDS`
  slots: tuple  # exchange buffer slots (forward, backward)
  registers: tuple  # estimated registers per thread (forward, backward)
  forward: PassCost  # µs per step
  backward: PassCost
  evaluation: PassCost  # the forward that stores only the final state, as evaluation runs it
  layout_us: float  # per training batch: XLA's passes around both kernels, hoisted matmuls included
  # µs per call, as mosaic_sweep times the engine: the forward without a gradient, returning every
  # step's h ("fwd"), evaluation's final-state forward ("final"), and the forward and backward of a loss
  # on every step's output ("fwd_bwd").
  call_us: dict
  epoch_s: (
    dict  # seconds per article epoch (train batches forward + backward, test batches evaluated), by part
  )

  @property
  def spills(self) -> bool:
    return max(self.registers) > _value_at("register_cap", self.bound)

  @property
  def train_s_per_epoch(self) -> float:
    return sum(self.epoch_s.values())


def _value_at(name: str, bound: str) -> float:
  with _at(bound):
    return _value(name)


def _check(layout: str, cluster_size: int, matmul_precision: str, bound: str, **sizes) -> int:
  """The number of bf16 pieces of ``matmul_precision``, after checking the configuration."""
  if layout not in LAYOUTS:
    raise ConfigError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
  if bound not in BOUNDS:
    raise ConfigError(f"unknown bound {bound!r}; choose one of: {', '.join(BOUNDS)}")
  if matmul_precision not in mosaic_gpu.MATMUL_PRECISIONS:
    raise ConfigError(
      f"unknown matmul_precision {matmul_precision!r}; choose one of: {', '.join(mosaic_gpu.MATMUL_PRECISIONS)}"
    )
  if cluster_size not in mosaic_gpu.CLUSTER_SIZES:
    raise ConfigError(f"cluster_size must be one of {mosaic_gpu.CLUSTER_SIZES}, got {cluster_size}")
  if not LAYOUTS[layout].fits(cluster_size, matmul_precision):
    raise ConfigError(
      f"cluster_size {cluster_size} with matmul_precision {matmul_precision!r} does not fit a CTA's shared "
      "memory, so there is nothing to predict; choose a configuration for which fits is True"
    )
  for name, size in sizes.items():
    if size < 1:
      raise ConfigError(f"{name} must be at least 1, got {size}")
  if sizes["hidden"] > PADDED_HIDDEN:
    raise ConfigError(f"the mosaic kernels handle hidden sizes up to {PADDED_HIDDEN}, got {sizes['hidden']}")
  return mosaic_gpu._PIECES[matmul_precision]


def predict(
  cluster_size: int,
  matmul_precision: str,
  *,
  layout: str = "units",
  bound: str = "high",
  batch: int = 64,
  steps: int = 500,
  input_size: int = 32,
  hidden: int = 100,
) -> Prediction:
  """The predicted cost of the kernels as written on an H200, for one configuration and one shape, with
  every term at ``bound``'s end of its range."""
  pieces = _check(
    layout,
    cluster_size,
    matmul_precision,
    bound,
    batch=batch,
    steps=steps,
    input_size=input_size,
    hidden=hidden,
  )
  with _at(bound, _FLIPPED.get()):
    return _predict(layout, cluster_size, matmul_precision, pieces, bound, batch, steps, input_size, hidden)


def _predict(layout, cluster_size, matmul_precision, pieces, bound, batch, steps, input_size, hidden):
  train_forward, sequence_forward, evaluation_forward = _FORWARDS[layout]
  slots = (
    mosaic_split.SLOTS if layout == "batch" else mosaic_gpu.exchange_slots(cluster_size, pieces, "forward"),
    mosaic_gpu.exchange_slots(cluster_size, pieces, "backward"),
  )
  forward = _pass_cost(train_forward, cluster_size, pieces, slots[0])
  backward = _pass_cost(BACKWARD, cluster_size, pieces, slots[1])
  sequence, evaluation = (
    _pass_cost(p, cluster_size, pieces, slots[0]) for p in (sequence_forward, evaluation_forward)
  )
  # Batch blocks beyond what the SMs hold at once run in further waves (the forward's blocks decide).
  clusters = math.ceil(batch / BLOCK_BATCH) * BLOCK_BATCH // train_forward.rows
  waves = math.ceil(clusters * cluster_size / _value("sms"))
  mask_width = PADDED_HIDDEN // cluster_size if layout == "batch" else 0
  xla = _xla_bytes(batch, steps, input_size, hidden, mask_width)
  # The classifier's training step (its LSTM returns the final h: no outputs cropped, no per-step
  # cotangent) and its evaluation (the final-state forward: the projection only).
  train_bytes = xla["projection"] + xla["weights"]
  eval_bytes = xla["projection"]
  # Each epoch runs the forward and the backward on its train batches, evaluation on its test batches.
  batches = math.ceil(ARTICLE_EXAMPLES / batch)
  kernel_steps = steps * waves
  sequences_backward = _pass_cost(BACKWARD_SEQUENCES, cluster_size, pieces, slots[1])
  call_us = {
    "fwd": kernel_steps * sequence.total + _hbm_us(xla["projection"] + xla["outputs"]),
    "final": kernel_steps * evaluation.total + _hbm_us(eval_bytes),
    "fwd_bwd": kernel_steps * (forward.total + sequences_backward.total)
    + _hbm_us(train_bytes + xla["outputs"] + xla["cotangent"]),
  }
  epoch_s = {
    part: 1e-6 * batches * kernel_steps * sum(getattr(cost, part) for cost in (forward, backward, evaluation))
    for part in PARTS
  }
  epoch_s["layout"] = 1e-6 * batches * _hbm_us(train_bytes + eval_bytes)
  return Prediction(
    layout=layout,
    cluster_size=cluster_size,
    matmul_precision=matmul_precision,
    bound=bound,
    slots=slots,
    registers=(
      _registers(train_forward, cluster_size, pieces),
      _registers(BACKWARD, cluster_size, pieces),
    ),
    forward=forward,
    backward=backward,
    evaluation=evaluation,
    layout_us=_hbm_us(train_bytes),
    call_us=call_us,
    epoch_s=epoch_s,
  )


def predict_range(cluster_size: int, matmul_precision: str, **options) -> tuple:
  """(`predict` at the "low" end, at the "high" end)."""
  return tuple(predict(cluster_size, matmul_precision, bound=bound, **options) for bound in BOUNDS)


def configurations() -> list[tuple[str, int, str]]:
  """Every (layout, N, precision) a GPU runs, largest N first, "batch" before "units" at equal N."""
  return [
    (layout, n, p)
    for n in sorted(mosaic_gpu.CLUSTER_SIZES, reverse=True)
    for layout in ("batch", "units")
    for p in ("float32", "bfloat16")
    if LAYOUTS[layout].fits(n, p)
  ]


def best(matmul_precision: str) -> tuple[str, int]:
  """The (layout, N) of ``matmul_precision`` the model ranks first: the lowest epoch at the "high" end
  (the midpoint breaking ties). `mosaic_gpu.lstm` runs its layout."""

  def rank(configuration):
    low, high = predict_range(configuration[1], matmul_precision, layout=configuration[0])
    return high.train_s_per_epoch, low.train_s_per_epoch + high.train_s_per_epoch

  candidates = [(layout, n) for layout, n, p in configurations() if p == matmul_precision]
  return min(candidates, key=rank)


# How `markdown` names the parts of `Prediction.epoch_s`.
_LABELS = {
  "matmul": "matmul",
  "gate_math": "gate arithmetic",
  "global_io": "global loads and stores",
  "exchange": "exchange",
  "auto_barriers": "automatic barriers",
  "arrivals": "remote arrivals",
  "barrier": "cluster barrier",
  "layout": "XLA's passes around the kernels",
}


def _table(header: list, rows: list) -> str:
  lines = [header, ["---"] * len(header), *rows]
  return "".join("| " + " | ".join(str(cell) for cell in line) + " |\n" for line in lines)


def _span(low: float, high: float) -> str:
  return f"{low:.2f}-{high:.2f}"


def deciding_term(layout: str, cluster_size: int, matmul_precision: str) -> tuple[str, float]:
  """The term whose fast end alone lowers the "high" epoch most, and the seconds it saves."""
  high = predict(cluster_size, matmul_precision, layout=layout).train_s_per_epoch
  savings = {}
  for name in TERMS:
    token = _FLIPPED.set(name)
    try:
      savings[name] = high - predict(cluster_size, matmul_precision, layout=layout).train_s_per_epoch
    finally:
      _FLIPPED.reset(token)
  name = max(savings, key=savings.get)
  return name, savings[name]


def markdown() -> str:
  """The table of every configuration a GPU runs (low-high), then which targets the kernels as written
  miss at the high end, and the term that decides it."""
  header = ["layout", "N", "precision", "slots fwd/bwd", "registers fwd/bwd", "spills", "fwd µs/step"]
  header += ["bwd µs/step", "train s/epoch"]
  rows, best_high = [], {}
  for layout, size, precision in configurations():
    low, high = predict_range(size, precision, layout=layout)
    rows.append(
      [
        layout,
        size,
        precision,
        "{} / {}".format(*high.slots),
        "{} / {}".format(*high.registers),
        "yes" if high.spills else "no",
        _span(low.forward.total, high.forward.total),
        _span(low.backward.total, high.backward.total),
        _span(low.train_s_per_epoch, high.train_s_per_epoch),
      ]
    )
    if precision not in best_high or high.train_s_per_epoch < best_high[precision][1].train_s_per_epoch:
      best_high[precision] = (low, high)
  lines = []
  for precision, (low, high) in best_high.items():
    target = TARGETS[precision]
    met = "meets" if high.train_s_per_epoch <= target else "misses"
    largest = sorted(high.epoch_s.items(), key=lambda item: -item[1])[:3]
    parts = ", ".join(f"{_LABELS[part]} {seconds:.2f} s" for part, seconds in largest)
    line = (
      f"  * {precision}: best {high.layout} at N = {high.cluster_size}, "
      f"{_span(low.train_s_per_epoch, high.train_s_per_epoch)} s/epoch; its high end {met} the {target} s "
      f"target; largest parts at the high end: {parts}."
    )
    if met == "misses":
      name, saved = deciding_term(high.layout, high.cluster_size, precision)
      over = high.train_s_per_epoch - target
      line += (
        f" It misses by {over:.2f} s; the term that decides most is {name} ({TERMS[name].low:g}-"
        f"{TERMS[name].high:g} {TERMS[name].unit}): at its fast end alone the high end drops {saved:.2f} s"
        f"{', under the target' if saved >= over else ', still over'}."
      )
    lines.append(line + "\n")
  return _table(header, rows) + "\nPredicted for the kernels as written:\n" + "".join(lines)


if __name__ == "__main__":
  print(markdown(), end="")

"""`seqclf.rnn.engines.mosaic_cost`: its parts against figures worked out by hand (at the "high" end of the
terms' ranges, where the model's default is), its terms' sources and ranges, the counts it takes from the
kernels' code, its register estimate and the copy of its table in docs/kernels.md.

Nothing here needs Mosaic GPU: the model is arithmetic, and the kernels' plane counts are read from
`mosaic_gpu.make_lstm` with the kernel launch replaced.
"""

import pathlib

import jax
import jax.numpy as jnp
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_cost, mosaic_gpu

REPO = pathlib.Path(__file__).resolve().parent.parent
# The SM clock the H200 datasheet's FP32 rate implies: 67 TFLOP/s over 132 SMs x 128 lanes x 2 FLOP.
CLOCK = 67e12 / (132 * 128 * 2)
# The slow ends of the ranged terms: L2 47 B/clock, DSMEM 13 B/clock, 0.25 us exchange latency, 40 clocks a
# bar.sync, 1 clock a remote arrival, 40 other registers, 60 % of HBM's bandwidth.
L2, DSMEM, LATENCY, BAR, ARRIVAL, OTHER, HBM = 47, 13, 0.25, 40, 1, 40, 0.6


def _us(clocks):
  return 1e6 * clocks / CLOCK


def test_n8_float32_parts_match_the_hand_count():
  """N = 8, "float32" (3 products, hi and lo pieces), B = 64, T = 500: Hs = 16, 8 elements a thread."""
  cost = mosaic_cost.predict(8, "float32")
  # 4 gates x 3 products x 2 x [64, 128] x [128, 16] at 989 TFLOP/s over 132 SMs. Operands, bf16, at
  # 128 B/clock: forward 3 wgmmas [64, 128] x [128, 64] (the four gates' columns side by side); backward
  # 4 x 3 wgmmas [64, 16] x [16, 128] (dz of a gate by its rows of U^T). Both below the tensor time.
  matmul = pytest.approx(1e6 * 4 * 3 * 2 * 64 * 128 * 16 / (989e12 / 132))
  assert 4 * 3 * 2 * 64 * 16 * 128 == 3 * 2 * 64 * 128 * 64 == 4 * 3 * 2 * 64 * 128 * 16
  forward_operands = _us(3 * 2 * (64 * 128 + 128 * 64) / 128)
  backward_operands = _us(4 * 3 * 2 * (64 * 16 + 16 * 128) / 128)
  for kernel_pass, operands in ((cost.forward, forward_operands), (cost.backward, backward_operands)):
    assert kernel_pass.tensor == matmul
    assert kernel_pass.smem_operands == pytest.approx(operands) and operands < kernel_pass.tensor
  # Forward, per element: 3 sigmoids (ex2, rsqrt, add, square) and 2 tanh (a sigmoid, 2x, 2s - 1): 5
  # ex2 (FMUL + MUFU.EX2), 5 rsqrt; plain ops 4 (z) + 1 (keep) + 3 (c) + 2 (h) + 1 (h x mask) + 3 x 2 +
  # 2 x 4 = 25, 3 (split h into hi and lo): 25 + 3 + 5 x 2 + 5 = 43 issued, below 10 MUFU x 8 = 80.
  assert cost.forward.gate_math == pytest.approx(_us(8 * 80))
  # 4 planes in and 6 out, 8 f32 a thread as 2-wide vectors (40 instructions) or 40960 B at 47 B/clock.
  assert cost.forward.global_io == pytest.approx(_us(10 * 64 * 16 * 4 / L2))
  # h's hi and lo slices [64, 16] bf16 to 8 CTAs: 32 KiB at 13 B/clock (64 stores a thread), + latency.
  assert cost.forward.exchange == pytest.approx(_us(8 * 2 * 64 * 16 * 2 / DSMEM) + LATENCY)
  assert cost.forward.barrier == 0.0  # two slots
  # No automatic barriers (`mosaic_gpu._needs_auto_barriers`: "gmem" only); 8 senders x 128 threads
  # arrive on the barrier, one store call per target carrying both pieces.
  assert cost.forward.auto_barriers == 0.0
  assert cost.forward.arrivals == pytest.approx(_us(8 * 128 * ARRIVAL))
  # Backward (no per-step cotangent, as the classifier trains), per element: 28 plain ops + 4 of
  # tanh(c), 1 ex2 (2) and 1 rsqrt, dz of 4 gates split (4 x 3) and staged as bf16x2 (4 x 2 / 2
  # st.shared): 51 issued, above 2 MUFU x 8 = 16 and the staged 4 x 2 x 2 B x 128 threads at 128
  # B/clock = 16. 6 planes in (4 gates, c_t, c_{t-1}), 4 out.
  assert cost.backward.gate_math == pytest.approx(_us(8 * (32 + 3 + 4 * 3 + 4)))
  assert cost.backward.global_io == pytest.approx(_us(10 * 64 * 16 * 4 / L2))
  # Reduce-scatter: 8 shares [64, 16] f32 = 32 KiB at 13 B/clock (32 eight-byte stores a thread), the
  # latency, then the 8 shares received: 32 KiB at 128 B/clock (32 ld.shared.v2 a thread) and 7 adds x 8.
  assert cost.backward.exchange == pytest.approx(
    _us(8 * 64 * 16 * 4 / DSMEM + 8 * 64 * 16 * 4 / 128 + 7 * 8) + LATENCY
  )
  assert cost.backward.barrier == 0.0
  # No automatic barriers (dz's staged pieces are ordered by commit_smem); one store call per sender.
  assert cost.backward.auto_barriers == 0.0
  assert cost.backward.arrivals == pytest.approx(_us(8 * 128 * ARRIVAL))
  assert cost.slots == (2, 2)
  io, sent = 10 * 64 * 16 * 4 / L2, 32768 / DSMEM
  forward = cost.forward.tensor + _us(8 * 80 + io + sent + 1024 * ARRIVAL) + LATENCY
  backward = cost.backward.tensor + _us(8 * 51 + io + sent + 256 + 56 + 1024 * ARRIVAL) + LATENCY
  assert cost.forward.total == pytest.approx(forward)
  assert cost.backward.total == pytest.approx(backward)


def test_the_exchange_at_n1_and_n2_and_the_one_slot_barrier():
  # N = 1: the forward writes h (bf16, [64, 128] = 16 KiB) into its own shared memory at 128 B/clock
  # (32 stores a thread); the backward's one accumulator is dh, so there is no exchange.
  alone = mosaic_cost.predict(1, "bfloat16")
  assert alone.forward.exchange == pytest.approx(_us(64 * 128 * 2 / 128))
  assert alone.backward.exchange == 0.0 and alone.slots == (2, 2)
  assert alone.forward.arrivals == alone.backward.arrivals == 0.0
  # N = 2 float32: one backward slot, so a cluster barrier a step; 32 elements a thread. Shares: 2 x
  # [64, 64] f32 = 32 KiB at 13 B/clock, the latency, 32 KiB read at 128 B/clock and 1 add x 32.
  pair = mosaic_cost.predict(2, "float32")
  assert pair.slots == (2, 1) and (pair.forward.barrier, pair.backward.barrier) == (0.0, 0.3)
  assert pair.backward.exchange == pytest.approx(
    _us(2 * 64 * 64 * 4 / DSMEM + 2 * 64 * 64 * 4 / 128 + 32) + LATENCY
  )
  assert mosaic_cost.predict(2, "float32", bound="low").backward.barrier == 0.18


def test_article_epoch_and_layout_traffic_match_the_hand_count():
  cost = mosaic_cost.predict(8, "bfloat16")
  # Bytes XLA moves around the kernels per batch (B = 64: no batch padding). The kernels read and write
  # batch-major [B, T, .] arrays with each gate's units padded to 128; XLA runs the hoisted matmuls and
  # crops the padding. Per step and row: xs (32) and the padded xw (512) for the projection.
  values = 500 * 64 * 4  # bytes of one f32 value per step and row
  projection = values * (32 + 512)
  # dz (512) read 4 times, h_{t-1} (128) read, written and read, xs read by dW, dxs written and read
  # (2 x 32), and cropped (3 x 32).
  weights = values * (4 * 512 + 3 * 128 + 2 * 32 + 3 * 32)
  hbm = 4.8e12 * HBM
  # The classifier trains with the final h only: no outputs cropped, no per-step cotangent.
  assert cost.layout_us == pytest.approx(1e6 * (projection + weights) / hbm)
  assert projection + weights == pytest.approx(401.4e6, rel=1e-3)  # 0.4 GB a training batch
  # Evaluation's kernel loads the 4 xw planes (16 KiB a step at 47 B/clock) and stores none; the rest of
  # a step is the forward's. Returning h: 5 planes, 20 KiB.
  assert cost.evaluation.global_io == pytest.approx(_us(4 * 64 * 16 * 4 / L2))
  assert cost.evaluation._replace(global_io=cost.forward.global_io) == cost.forward
  sequence_step = cost.forward.total - cost.forward.global_io + _us(5 * 64 * 16 * 4 / L2)
  # 391 batches each way: train = forward and backward, test = evaluation's forward.
  train = 500 * (cost.forward.total + cost.backward.total) + 1e6 * (projection + weights) / hbm
  test = 500 * cost.evaluation.total + 1e6 * projection / hbm
  # As mosaic_sweep times it: "fwd" crops h (read 128, written 100); "fwd_bwd" takes a loss on every
  # output, so the backward loads dh_t too (one more plane, one more add) and XLA pads the cotangent.
  outputs = values * (128 + 100)
  fwd = 500 * sequence_step + 1e6 * (projection + outputs) / hbm
  backward_step = cost.backward.total - cost.backward.global_io + _us(11 * 64 * 16 * 4 / L2) + _us(8)
  fwd_bwd = 500 * (cost.forward.total + backward_step) + 1e6 * (projection + weights + 2 * outputs) / hbm
  assert cost.call_us == pytest.approx({"fwd": fwd, "final": test, "fwd_bwd": fwd_bwd})
  assert cost.train_s_per_epoch == pytest.approx(391e-6 * (train + test))
  assert sum(cost.epoch_s.values()) == pytest.approx(cost.train_s_per_epoch)


def test_registers_are_live_planes_pieces_and_the_rest_and_spills_are_flagged_above_255():
  # N = 4 bfloat16 forward: 16 elements a plane a thread; 15 live planes, h's bf16x2 pieces (8), 40.
  assert mosaic_cost.predict(4, "bfloat16").registers[0] == 15 * 16 + 8 + OTHER
  # N = 8 float32 backward: 15 live planes of 8, the [64, 128] f32 accumulator (64 a thread), 40.
  assert mosaic_cost.predict(8, "float32").registers == (15 * 8 + 8 + OTHER, 15 * 8 + 64 + OTHER)
  # N = 1 backward: the accumulator is still 64 registers.
  assert mosaic_cost.predict(1, "bfloat16").registers[1] == 15 * 64 + 64 + OTHER
  # The batch-split forward at N = 8: 2 elements a plane a thread, 17 live planes (the mask plane and its
  # prefetch), 2 pieces of 1 bf16x2, the [64, 16] accumulator (8), 40; 30 at the low end.
  assert mosaic_cost.predict(8, "float32", layout="batch").registers[0] == 17 * 2 + 2 + 8 + OTHER
  assert mosaic_cost.predict(8, "float32", layout="batch", bound="low").registers[0] == 17 * 2 + 2 + 8 + 30
  for layout, size, precision in mosaic_cost.configurations():
    cost = mosaic_cost.predict(size, precision, layout=layout)
    assert cost.spills == (max(cost.registers) > 255), (layout, size, precision)
  assert not mosaic_cost.predict(8, "float32").spills and mosaic_cost.predict(4, "float32").spills


def test_every_term_names_its_source():
  assert set(mosaic_cost.TERMS) >= {"sms", "bf16_dense_flops", "dsmem_bytes_per_clock", "exchange_latency_us"}
  assert {"auto_barrier_clocks", "remote_arrival_clocks"} <= set(mosaic_cost.TERMS)
  for name, term in mosaic_cost.TERMS.items():
    assert term.source in mosaic_cost.SOURCES, name
    assert 0 <= term.low <= term.high and term.high > 0 and term.unit and len(term.basis) > 10, name
    if term.source == "specified":  # one of NVIDIA's documents, named, and a single figure
      assert ("NVIDIA" in term.basis or "CUDA C++" in term.basis) and term.low == term.high, name
    if term.source == "published":  # a public microbenchmark, named
      assert "arXiv 2402.13499" in term.basis, name
  # Nothing is measured yet: the exchange's terms come from the microbenchmark paper or are assumed.
  assert mosaic_cost.TERMS["dsmem_bytes_per_clock"][:2] == (13, 17)
  assert mosaic_cost.TERMS["remote_arrival_clocks"].source == "assumed"
  # The gate arithmetic's approximate instructions, each with its instruction and MUFU count.
  for name in ("ex2", "rsqrt"):
    for suffix in ("instructions", "mufu"):
      assert mosaic_cost.TERMS[f"{name}_{suffix}"].source == "assumed"


def test_the_plane_counts_are_what_make_lstm_builds(monkeypatch):
  """The kernels' launches replaced by zeros: the [B, T, X] arrays each pass reads and writes, in Hp-wide
  planes (the step mask [B, T] is a row, not a plane), against the model's counts. The backward reads
  c at t and at t - 1 from one [B, T + 1, Hp] array: two planes."""
  seen = {}

  def planes(shapes, steps):
    return sum(shape[2] // 128 for shape in shapes if len(shape) == 3 and shape[1] in (steps, steps + 1))

  def launch(kernel, setup, blocks, out_types, kernel_pass, *args):
    name = kernel.func.__name__
    steps = args[0].shape[1]  # the first input is xw or the gates, [B, T, 4 Hp]
    read = planes([a.shape for a in args], steps) + (name == "_backward_kernel")
    written = planes([out.shape for out in out_types], steps)
    seen[name, written, read] = kernel_pass
    return [jnp.zeros(out.shape, out.dtype) for out in out_types]

  monkeypatch.setattr(mosaic_gpu, "_launch", launch)
  lstm = mosaic_gpu.make_lstm("bfloat16", cluster_size=2, interpret=True)
  batch, steps, inputs, hidden = 3, 5, 4, 6
  params = {
    "kernel": jnp.ones((inputs, 4 * hidden)),
    "recurrent_kernel": jnp.ones((hidden, 4 * hidden)),
    "bias": jnp.ones(4 * hidden),
  }
  state = jnp.ones((batch, hidden))
  args = (
    params,
    jnp.ones((batch, steps, inputs)),
    state,
    state,
    jnp.ones((batch, steps), bool),
    jnp.ones((batch, inputs)),
    state,
  )
  lstm(*args)
  lstm(*args, return_sequences=False)
  jax.grad(lambda p: jnp.sum(lstm(p, *args[1:])[0]))(params)
  jax.grad(lambda p: jnp.sum(lstm(p, *args[1:], return_sequences=False)[0]))(params)
  expected = {
    ("_forward_kernel", kernel_pass.planes_out, kernel_pass.planes_in): "forward"
    for kernel_pass in (mosaic_cost.FORWARD, mosaic_cost.SEQUENCE, mosaic_cost.EVALUATION)
  }
  for kernel_pass in (mosaic_cost.BACKWARD, mosaic_cost.BACKWARD_SEQUENCES):
    expected["_backward_kernel", kernel_pass.planes_out, kernel_pass.planes_in] = "backward"
  assert seen == expected
  for kernel_pass, exchange in ((mosaic_cost.FORWARD, "gather"), (mosaic_cost.BACKWARD, "reduce_scatter")):
    assert kernel_pass.exchange == exchange and hasattr(mosaic_gpu._Exchange, exchange)


@pytest.mark.parametrize(
  "args, sizes, message",
  [
    ((8, "tf32"), {}, "unknown matmul_precision 'tf32'"),
    ((3, "bfloat16"), {}, "cluster_size must be one of"),
    ((1, "float32"), {}, "does not fit a CTA's shared memory"),
    ((8, "float32"), {"layout": "rows"}, "unknown layout 'rows'"),
    ((8, "float32"), {"bound": "middle"}, "unknown bound 'middle'"),
    ((8, "bfloat16"), {"hidden": 200}, "hidden sizes up to 128"),
    ((8, "bfloat16"), {"steps": 0}, "steps must be at least 1"),
  ],
)
def test_bad_configurations_are_one_clear_error(args, sizes, message):
  with pytest.raises(ConfigError, match=message):
    mosaic_cost.predict(*args, **sizes)


def test_the_docs_hold_the_models_table():
  table = mosaic_cost.markdown()
  rows = [line for line in table.splitlines() if line.startswith(("| batch ", "| units "))]
  assert len(rows) == len(mosaic_cost.configurations()) == 14  # N = 1 float32 does not fit, either layout
  assert table in (REPO / "docs" / "kernels.md").read_text(), (
    "docs/kernels.md's cost table differs from the model: paste `python -m seqclf.rnn.engines.mosaic_cost`'s output"
  )


def test_the_batch_split_forward_at_n8_matches_the_hand_count():
  """`mosaic_split`'s forward, N = 8, "float32": [16, 16] planes, 2 elements a thread."""
  cost = mosaic_cost.predict(8, "float32", layout="batch")
  forward = cost.forward
  # 3 products x 8 wgmmas [64, 16] x [16, 16]: U_j^T [64, 128] and h [128, 16], bf16, read per product:
  # 61440 B at 128 B/clock, slower than the tensor cores' 0.105 us.
  assert forward.smem_operands == pytest.approx(_us(3 * 2 * (64 * 128 + 128 * 16) / 128))
  assert forward.tensor == pytest.approx(1e6 * 4 * 3 * 2 * 16 * 128 * 16 / (989e12 / 132))
  assert forward.tensor < forward.matmul == forward.smem_operands
  # 43 issued as "units" + the regroup (2 stores, 4 loads, 2 pieces staged) = 51, below 10 MUFU x 8 = 80.
  assert forward.gate_math == pytest.approx(_us(2 * 80))
  # 5 planes in (4 xw, the mask) and 6 out, one f32 an instruction (22) or 11264 B at 47 B/clock.
  assert forward.global_io == pytest.approx(_us(11 * 16 * 16 * 4 / L2))
  # h's 2 pieces [16, 16] bf16 to 8 CTAs: 8 KiB at 13 B/clock, + latency.
  assert forward.exchange == pytest.approx(_us(8 * 2 * 16 * 16 * 2 / DSMEM) + LATENCY)
  # Its automatic barriers stay (threads read back what others stored to shared memory): 6 plane stores,
  # the accumulator's copy and 2 stage stores, 18 bar.sync. One store call per target carrying both
  # pieces: 8 senders x 128 threads arrive on the barrier, as for "units".
  assert forward.auto_barriers == pytest.approx(_us(18 * BAR))
  assert forward.arrivals == pytest.approx(_us(8 * 128 * ARRIVAL))
  assert forward.arrivals == mosaic_cost.predict(8, "float32").forward.arrivals
  # Training's backward is the "units" kernel's; the mask planes [64, 500, 16] f32 add to the projection.
  units = mosaic_cost.predict(8, "float32")
  assert cost.backward == units.backward
  assert cost.layout_us - units.layout_us == pytest.approx(1e6 * 500 * 64 * 16 * 4 / (4.8e12 * HBM))


def test_every_prediction_is_a_range_low_to_high():
  for layout, size, precision in mosaic_cost.configurations():
    low, high = mosaic_cost.predict_range(size, precision, layout=layout)
    for name in ("forward", "backward", "evaluation"):
      for part in mosaic_cost.PARTS:
        assert getattr(getattr(low, name), part) <= getattr(getattr(high, name), part), (
          layout,
          size,
          name,
          part,
        )
    assert low.train_s_per_epoch < high.train_s_per_epoch


def test_the_engine_runs_the_configuration_ranked_first():
  """`best` ranks by the epoch's high end: the batch-split forward at the default cluster size, whose
  kernels the engine builds without naming N."""
  for precision in ("float32", "bfloat16"):
    assert mosaic_cost.best(precision) == ("batch", mosaic_gpu.DEFAULT_CLUSTER_SIZE)
    high = {
      (layout, size): mosaic_cost.predict(size, precision, layout=layout).train_s_per_epoch
      for layout, size, p in mosaic_cost.configurations()
      if p == precision
    }
    assert min(high, key=high.get) == mosaic_cost.best(precision)


def test_a_missed_target_names_the_term_that_decides_it():
  """At the high end the batch-split float32 epoch misses 0.9 s; flipping the remote arrivals to their
  fast end saves what they cost at the slow end, the most of any term."""
  high = mosaic_cost.predict(8, "float32", layout="batch")
  name, saved = mosaic_cost.deciding_term("batch", 8, "float32")
  assert high.train_s_per_epoch > mosaic_cost.TARGETS["float32"]
  assert name == "remote_arrival_clocks" and saved == pytest.approx(high.epoch_s["arrivals"])

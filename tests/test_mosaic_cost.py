"""`seqclf.lstm.mosaic_cost`: its parts against figures worked out by hand, its terms' sources, the counts
it takes from the kernels' code, its register estimate and the copy of its table in docs/kernels.md.

Nothing here needs Mosaic GPU: the model is arithmetic, and the kernels' plane counts are read from
`mosaic_gpu.make_recurrence` with the kernel launch replaced.
"""

import pathlib

import jax.numpy as jnp
import pytest

from seqclf.errors import ConfigError
from seqclf.lstm import mosaic_cost, mosaic_gpu

REPO = pathlib.Path(__file__).resolve().parent.parent
# The SM clock the H200 datasheet's FP32 rate implies: 67 TFLOP/s over 132 SMs x 128 lanes x 2 FLOP.
CLOCK = 67e12 / (132 * 128 * 2)


def _us(clocks):
  return 1e6 * clocks / CLOCK


def test_n8_float32_parts_match_the_hand_count():
  """N = 8, "float32" (3 products, hi and lo pieces), B = 64, T = 500: Hs = 16, 8 elements a thread."""
  cost = mosaic_cost.predict(8, "float32")
  # 4 gates x 3 products x 2 x [64, 128] x [128, 16] at 989 TFLOP/s over 132 SMs; operands A and B of
  # each wgmma, bf16, at 128 B/clock.
  matmul = pytest.approx(1e6 * 4 * 3 * 2 * 64 * 128 * 16 / (989e12 / 132))
  operands = _us(4 * 3 * 2 * (64 * 128 + 128 * 16) / 128)
  for kernel_pass in (cost.forward, cost.backward):
    assert kernel_pass.tensor == matmul
    assert kernel_pass.smem_operands == pytest.approx(operands)
  # Forward, per element: 14 plain ops, 3 (split h into hi and lo), 3 expf (8) and 3 divides (8), 2
  # tanhf (20): 105 issued; 10 MUFU x 8 clocks = 80 does not bind.
  assert cost.forward.gate_math == pytest.approx(_us(8 * (14 + 3 + 3 * 8 + 3 * 8 + 2 * 20)))
  # 5 planes in and 6 out, 8 f32 a thread as 2-wide vectors (44 instructions) or 45056 B at 64 B/clock.
  assert cost.forward.global_io == pytest.approx(_us(11 * 64 * 16 * 4 / 64))
  # h's hi and lo slices [64, 16] bf16 to 8 CTAs: 32 KiB at 32 B/clock (64 stores a thread), + 0.5 us.
  assert cost.forward.exchange == pytest.approx(_us(8 * 2 * 64 * 16 * 2 / 32) + 0.5)
  assert cost.forward.barrier == 0.0  # two slots
  # Backward: 29 plain ops, 4 x 3 splitting dz, one tanhf: 61; 8 planes in, 4 out; dz of 4 gates in
  # two pieces to 8 CTAs (128 KiB, 256 stores a thread); one slot, so a cluster barrier.
  assert cost.backward.gate_math == pytest.approx(_us(8 * (29 + 4 * 3 + 20)))
  assert cost.backward.global_io == pytest.approx(_us(12 * 64 * 16 * 4 / 64))
  assert cost.backward.exchange == pytest.approx(_us(8 * 4 * 2 * 64 * 16 * 2 / 32) + 0.5)
  assert cost.backward.barrier == 0.3
  assert cost.slots == (2, 1)
  forward = max(cost.forward.tensor, operands) + _us(8 * 105 + 704 + 1024) + 0.5
  backward = max(cost.backward.tensor, operands) + _us(8 * 61 + 768 + 4096) + 0.5 + 0.3
  assert cost.forward.total == pytest.approx(forward)
  assert cost.backward.total == pytest.approx(backward)


def test_article_epoch_and_layout_traffic_match_the_hand_count():
  cost = mosaic_cost.predict(8, "bfloat16")
  # Bytes XLA moves around the kernels per batch; planes [T, B, H] and padded [T, 64, 128] of float32.
  plane, padded = 500 * 64 * 100 * 4, 500 * 64 * 128 * 4
  forward = 4 * plane + 5 * padded + 6 * (padded + plane)  # _blocks of xw and the mask, _unblock
  forward += 500 * 64 * 4 * (3 * 32 + 400)  # xs made time-major, xw written
  backward = 6 * plane + 8 * padded + 4 * (padded + plane)
  backward += 500 * 64 * 4 * (4 * 400 + 3 * 100 + 4 * 32)  # dz read 4 times, h_{t-1}, dxs
  assert forward + backward == pytest.approx(955.9e6, rel=1e-4)  # about 1 GB a training batch
  hbm = 4.8e12 * 0.7
  assert cost.layout_us == pytest.approx(1e6 * (forward + backward) / hbm)
  # 391 batches each way: train = forward and backward, test = forward only.
  train = 500 * (cost.forward.total + cost.backward.total) + 1e6 * (forward + backward) / hbm
  test = 500 * cost.forward.total + 1e6 * forward / hbm
  assert cost.call_us == pytest.approx({"fwd": test, "fwd_bwd": train})
  assert cost.train_s_per_epoch == pytest.approx(391e-6 * (train + test))
  assert sum(cost.epoch_s.values()) == pytest.approx(cost.train_s_per_epoch)
  # Evaluation's unread outputs: 6 planes stored in the kernel (24 instructions or 24 KiB at 64 B/clock
  # a step), then unblocked.
  unread = 500 * _us(6 * 64 * 16 * 4 / 64) + 1e6 * 6 * (padded + plane) / hbm
  assert cost.eval_unread_s == pytest.approx(391e-6 * unread)


def test_registers_are_live_planes_pieces_and_the_rest_and_spills_are_flagged_above_255():
  # N = 4 bfloat16 forward: 16 elements a plane a thread; 17 live planes, h's bf16x2 pieces (8), 16.
  assert mosaic_cost.predict(4, "bfloat16").registers[0] == 17 * 16 + 8 + 16
  # N = 8 float32 backward: 24 live planes of 8, dz's hi and lo as bf16x2 (4 x 2 x 4), 16: 240.
  assert mosaic_cost.predict(8, "float32").registers == (160, 240)
  for size, precision in mosaic_cost.configurations():
    cost = mosaic_cost.predict(size, precision)
    assert cost.spills == (max(cost.registers) > 255), (size, precision)
  assert not mosaic_cost.predict(8, "float32").spills and mosaic_cost.predict(4, "float32").spills


def test_every_term_names_its_source():
  assert set(mosaic_cost.TERMS) >= {"sms", "bf16_dense_flops", "dsmem_bytes_per_clock", "exchange_latency_us"}
  for name, term in mosaic_cost.TERMS.items():
    assert term.source in mosaic_cost.SOURCES, name
    assert term.value > 0 and term.unit and len(term.basis) > 10, name
    if term.source == "specified":  # one of NVIDIA's documents, named
      assert "NVIDIA" in term.basis or "CUDA C++" in term.basis, name
  # Nothing is measured yet; what is assumed says so in the docs too.
  assert mosaic_cost.TERMS["dsmem_bytes_per_clock"].source == "assumed"


def test_the_plane_counts_are_what_make_recurrence_builds(monkeypatch):
  """The kernels' launches replaced by zeros: the planes each pass loads and stores, the operands it exchanges."""
  seen = {}

  def launch(kernel, setup, blocks, out_types, operands, steps_in, *args):
    seen[kernel.__name__] = (steps_in.shape[3], out_types[0].shape[3], operands)
    return [jnp.zeros(out.shape, out.dtype) for out in out_types]

  monkeypatch.setattr(mosaic_gpu, "_launch", launch)
  recurrence = mosaic_gpu.make_recurrence("bfloat16", cluster_size=2, interpret=True)
  steps, batch, hidden = 2, 3, 4
  state, planes = jnp.ones((batch, hidden)), jnp.ones((steps, batch, hidden))
  mask, kernel = jnp.ones((steps, batch), bool), jnp.ones((hidden, 4 * hidden))
  recurrence.forward(jnp.ones((steps, batch, 4 * hidden)), kernel, state, state, mask, state)
  gates = jnp.ones((steps, batch, 4 * hidden))
  recurrence.backward(kernel, gates, planes, state, mask, state, planes, state, state)
  for name, kernel_pass in (
    ("_forward_kernel", mosaic_cost.FORWARD),
    ("_backward_kernel", mosaic_cost.BACKWARD),
  ):
    assert seen[name] == (kernel_pass.planes_in, kernel_pass.planes_out, kernel_pass.operands)


@pytest.mark.parametrize(
  "args, sizes, message",
  [
    ((8, "tf32"), {}, "unknown matmul_precision 'tf32'"),
    ((3, "bfloat16"), {}, "cluster_size must be one of"),
    ((1, "float32"), {}, "does not fit a CTA's shared memory"),
    ((8, "bfloat16"), {"hidden": 200}, "hidden sizes up to 128"),
    ((8, "bfloat16"), {"steps": 0}, "steps must be at least 1"),
  ],
)
def test_bad_configurations_are_one_clear_error(args, sizes, message):
  with pytest.raises(ConfigError, match=message):
    mosaic_cost.predict(*args, **sizes)


def test_the_docs_hold_the_models_table():
  table = mosaic_cost.markdown()
  rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
  assert len(rows) == len(mosaic_cost.configurations()) == 6  # N = 1, 2 float32 do not fit
  assert table in (REPO / "docs" / "kernels.md").read_text(), (
    "docs/kernels.md's cost table differs from the model: paste `python -m seqclf.lstm.mosaic_cost`'s output"
  )

"""`seqclf.profiling`: traces of steady-state steps from the training loop, the timing loop and a driver."""

import os
import pathlib

import jax
import jax.numpy as jnp

from seqclf import models, profiling, timing, train
from tests import drivers, synthetic


def has_trace(directory) -> bool:
  """Whether a trace was written: DIR/plugins/profile/<date>/<host>.xplane.pb (TensorBoard's profile
  plugin) and perfetto_trace.json.gz (Perfetto)."""
  names = [path.name for path in pathlib.Path(directory).glob("plugins/profile/*/*")]
  return any(name.endswith(".xplane.pb") for name in names) and "perfetto_trace.json.gz" in names


def test_a_step_trace_starts_after_warm_up_and_stops_after_its_steps(tmp_path):
  step = jax.jit(lambda x: x @ x)
  x = jnp.ones((8, 8))
  trace = profiling.StepTrace(str(tmp_path), steps=2, warmup=3)
  tracing = []
  for done in range(1, 8):
    with trace.step(done - 1):
      out = step(x)
    trace.advance(done, out)
    tracing.append(trace.tracing)
  assert tracing == [False, False, True, True, False, False, False] and trace.done
  assert has_trace(tmp_path)


def test_fit_writes_a_trace_of_its_steps(tmp_path):
  config = synthetic.config(epochs=1)
  config.model.engine = "scan"
  model = models.create("lstm", vocab_size=config.top_words, **config.model)
  trace = profiling.StepTrace(str(tmp_path / "profile"), steps=3)
  record, _ = train.fit(model, synthetic.signal_task(), config, seed=0, trace=trace)
  assert trace.done and len(record["epochs"]) == 1
  assert has_trace(tmp_path / "profile")


def test_a_trace_shorter_than_its_steps_is_closed_when_fit_ends(tmp_path):
  config = synthetic.config(epochs=1)  # 12 steps an epoch
  config.model.engine = "scan"
  model = models.create("lstm", vocab_size=config.top_words, **config.model)
  trace = profiling.StepTrace(str(tmp_path), steps=100)
  train.fit(model, synthetic.signal_task(), config, seed=0, trace=trace)
  assert trace.done and not trace.tracing and has_trace(tmp_path)


def test_steady_state_traces_apart_from_its_timed_repeats(tmp_path):
  calls = []

  def fn(x):
    calls.append(1)
    return x + 1

  trace = profiling.StepTrace(str(tmp_path), steps=4)
  stats = timing.steady_state(fn, jnp.zeros(3), warmup=1, repeats=2, trace=trace)
  assert len(calls) == 1 + profiling.WARMUP_STEPS + 4 + 2 and stats["repeats"] == 2
  assert has_trace(tmp_path)


def test_a_driver_writes_one_trace_per_measurement(tmp_path):
  result = drivers.run(
    "seqclf.benchmarks.lstm_engines",
    *[
      "--engines=scan",
      "--batch_sizes=2",
      "--steps=3",
      "--hidden_sizes=4",
      "--input_size=3",
      "--repeats=1",
      f"--workdir={tmp_path / 'work'}",
      f"--profile_dir={tmp_path / 'profile'}",
      "--profile_steps=2",
    ],
  )
  assert result.returncode == 0, result.stderr
  runs = sorted(os.listdir(tmp_path / "profile"))
  assert runs == ["scan-fwd-B2-T3-H4", "scan-fwd_bwd-B2-T3-H4"]
  for run in runs:
    assert has_trace(tmp_path / "profile" / run)

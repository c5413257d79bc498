r"""Data-parallel scaling: train-step examples/s against device count and per-device batch size.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m seqclf.benchmarks.scaling --device_counts=1,2,4
  python -m seqclf.benchmarks.scaling --variant=cnn_lstm --per_device_batch=16,64 --steps=500

Weak scaling keeps the per-device batch fixed (global batch = per-device batch x devices); strong
scaling keeps the global batch of the 1-device run and splits it. Efficiency is throughput against
N x the 1-device throughput (weak) or 1-device time / (N x time) (strong). Each point is one jitted
train step of the article's model on random tokens, timed as in `seqclf.timing`. Writes
``WORKDIR/scaling.json`` and ``scaling.md``.

From the config it reads the model (``model.*``, ``top_words``), the sequence length (``maxlen``, unless
``--steps``), the optimizer (``learning_rate``, ``adam_eps``, ``grad_clip_norm``) and ``mask``; the batch
sizes come from ``--per_device_batch``. Epoch feeding (``num_buckets``, ``device_resident``) does not
apply to one step on a fixed batch, so a config that sets it is refused.
"""

import os

import jax
import numpy as np
from absl import flags

from seqclf import cli, feeding, memory, models, parallel, presets, profiling, results, timing, train
from seqclf.errors import ConfigError

presets.define_flags()
profiling.define_flags()
_CONFIG = cli.define_config(
  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py")
)
_VARIANT = flags.DEFINE_string("variant", "lstm", "Model variant.")
_DEVICE_COUNTS = cli.define_positive_int_list(
  "device_counts", None, "Device counts (default: 1, 2, 4, ... up to all)."
)
_PER_DEVICE_BATCH = cli.define_positive_int_list("per_device_batch", [16, 64], "Per-device batch sizes.")
_STEPS = flags.DEFINE_integer("steps", None, "Sequence length (default: the config's maxlen).", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per point.", lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", "runs/scaling", "Where scaling.json/.md go.")

HEADER = ["devices", "per-device B", "global B", "mode", "ms/step", "examples/s", "efficiency"]


def step_time(model, config, devices, global_batch: int, steps: int, repeats: int, trace=None) -> dict:
  """One point: the train step's steady-state time on ``devices``; ``trace``: a profiler `StepTrace`."""
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(global_batch, mesh)
  params = model.init(jax.random.PRNGKey(0), np.ones((1, steps), np.int32))["params"]
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=train.make_optimizer(config))
  replicated, batch_sharding = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  state, key = parallel.shard((state, jax.random.PRNGKey(1)), replicated)
  jitted = jax.jit(
    train.make_train_step(model, train.uses_mask(config)), out_shardings=(replicated, replicated)
  )
  spec = feeding.batch_spec(global_batch, steps, batch_sharding)
  compiled, compile_s = timing.compile_seconds(jitted, state, spec, key)
  # Before the batch exists: a point too large for the device is one error line, not an allocation failure.
  memory.check_fits_in_memory([compiled], fix="lower --per_device_batch or --steps")
  rng = np.random.default_rng(0)
  batch = {
    "tokens": rng.integers(1, config.top_words, (global_batch, steps)).astype(np.int32),
    "labels": rng.integers(0, 2, global_batch).astype(np.int32),
    "weights": np.ones(global_batch, np.float32),
  }
  batch = parallel.shard(batch, batch_sharding)
  stats = timing.steady_state(lambda: compiled(state, batch, key), repeats=repeats, trace=trace)
  return {"compile_s": compile_s, **stats, "examples_per_s": global_batch / stats["median_s"]}


def main(argv):
  cli.require_no_arguments(argv)
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  config = _CONFIG.value
  train.validate(config)
  if config.get("num_buckets") or config.get("device_resident"):
    raise ConfigError(
      "seqclf.benchmarks.scaling times one train step on a fixed-length batch; --config.num_buckets and "
      "--config.device_resident feed epochs and do not apply here: drop them"
    )
  devices = jax.devices()
  counts = _DEVICE_COUNTS.value or [2**i for i in range(len(devices).bit_length()) if 2**i <= len(devices)]
  per_device = _PER_DEVICE_BATCH.value
  if max(counts) > len(devices):
    raise ConfigError(
      f"--device_counts must be in 1..{len(devices)} (devices here); on CPU set "
      "XLA_FLAGS=--xla_force_host_platform_device_count=N for more"
    )
  model = models.create(_VARIANT.value, vocab_size=config.top_words, **config.model)
  steps = _STEPS.value or config.maxlen
  runs, rows = [], []
  for b in per_device:
    base = {}
    for n in counts:
      for mode, global_batch in (("weak", b * n), ("strong", b * counts[0])):
        if mode == "strong" and global_batch % n:
          continue
        trace = profiling.from_flags(f"{mode}-{n}dev-B{global_batch}")
        point = step_time(model, config, devices[:n], global_batch, steps, _REPEATS.value, trace)
        base.setdefault(mode, (n, point))
        n0, p0 = base[mode]
        efficiency = (
          point["examples_per_s"] / (p0["examples_per_s"] * n / n0)
          if mode == "weak"
          else p0["median_s"] * n0 / (n * point["median_s"])
        )
        runs.append(
          {
            "devices": n,
            "per_device_batch": global_batch // n,
            "global_batch": global_batch,
            "mode": mode,
            "efficiency": efficiency,
            **point,
          }
        )
        rows.append(
          [
            n,
            global_batch // n,
            global_batch,
            mode,
            f"{1e3 * point['median_s']:.1f}",
            f"{point['examples_per_s']:,.0f}",
            f"{efficiency:.2f}",
          ]
        )
        print(results.markdown_table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
  meta = results.collect_meta(
    config,
    flags={
      "variant": _VARIANT.value,
      "steps": steps,
      "preset": preset,
      "profile_dir": profiling.PROFILE_DIR.value,
    },
  )
  results.write_json_atomic(
    os.path.join(_WORKDIR.value, "scaling.json"),
    {"schema_version": results.SCHEMA_VERSION, "kind": "scaling", "meta": meta, "runs": runs},
  )
  table = results.markdown_table(HEADER, rows)
  results.write_text_atomic(os.path.join(_WORKDIR.value, "scaling.md"), table)
  print("\n" + table)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

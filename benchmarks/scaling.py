r"""Data-parallel scaling: train-step examples/s against device count and per-device batch size.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m benchmarks.scaling --device_counts=1,2,4
  python -m benchmarks.scaling --variant=cnn_lstm --per_device_batch=16,64 --steps=500

Weak scaling keeps the per-device batch fixed (global batch = per-device batch x devices); strong
scaling keeps the global batch of the 1-device run and splits it. Efficiency is throughput against
N x the 1-device throughput (weak) or 1-device time / (N x time) (strong). Each point is one jitted
train step of the article's model on random tokens, timed as in `seqclf.timing`. Writes
``WORKDIR/scaling.json`` and ``scaling.md``.
"""

import os

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from seqclf import cli, models, parallel, presets, results, timing, train
from seqclf.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py"),
  "Config file (ml_collections get_config()).",
  lock_config=True,
)
_VARIANT = flags.DEFINE_string("variant", "lstm", "Model variant.")
_DEVICE_COUNTS = flags.DEFINE_list("device_counts", None, "Device counts (default: 1, 2, 4, ... up to all).")
_PER_DEVICE_BATCH = flags.DEFINE_list("per_device_batch", ["16", "64"], "Per-device batch sizes.")
_STEPS = flags.DEFINE_integer("steps", None, "Sequence length (default: the config's maxlen).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per point.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/scaling", "Where scaling.json/.md go.")

HEADER = ["devices", "per-device B", "global B", "mode", "ms/step", "examples/s", "efficiency"]


def step_time(model, config, devices, global_batch: int, steps: int, repeats: int) -> dict:
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(global_batch, mesh)
  rng = np.random.default_rng(0)
  batch = {
    "tokens": rng.integers(1, config.top_words, (global_batch, steps)).astype(np.int32),
    "labels": rng.integers(0, 2, global_batch).astype(np.int32),
    "weights": np.ones(global_batch, np.float32),
  }
  params = model.init(jax.random.PRNGKey(0), batch["tokens"][:1])["params"]
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=train.make_optimizer(config))
  replicated = parallel.replicated(mesh)
  state, key = parallel.shard((state, jax.random.PRNGKey(1)), replicated)
  batch = parallel.shard(batch, parallel.batch_sharding(mesh))
  jitted = jax.jit(train.make_train_step(model), out_shardings=(replicated, replicated))
  compiled, compile_s = timing.compile_seconds(jitted, state, batch, key)
  stats = timing.steady_state(lambda: compiled(state, batch, key), repeats=repeats)
  return {"compile_s": compile_s, **stats, "examples_per_s": global_batch / stats["median_s"]}


def main(argv):
  del argv
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  config = _CONFIG.value
  devices = jax.devices()
  try:
    counts = (
      [int(c) for c in _DEVICE_COUNTS.value]
      if _DEVICE_COUNTS.value
      else [2**i for i in range(len(devices).bit_length()) if 2**i <= len(devices)]
    )
    per_device = [int(b) for b in _PER_DEVICE_BATCH.value]
  except ValueError:
    raise ConfigError("--device_counts and --per_device_batch take comma-separated integers") from None
  if max(counts) > len(devices) or min(counts) < 1:
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
        point = step_time(model, config, devices[:n], global_batch, steps, _REPEATS.value)
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
  meta = results.collect_meta(config, flags={"variant": _VARIANT.value, "steps": steps, "preset": preset})
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

r"""Reproduces the tutorial's table: trains the variants on IMDB and reports s/epoch and test accuracy.

  python -m benchmarks.article --imdb=../shared/data/aclImdb_labeled.tar.gz --workdir=runs/article
  python -m benchmarks.article --variants=lstm,cnn_lstm --epochs=1 --seeds=1,2 --engine=scan \
      --config=configs/tiny.py --config.batch_size=8

Writes ``WORKDIR/results.json`` (schema in WORKSPACE.md), ``WORKDIR/results.md`` (the printed table) and
``WORKDIR/vocab.json``; both result files are rewritten after every finished run, atomically.
"""

import os

import jax
from absl import flags
from ml_collections import config_flags

from benchmarks import peers
from seqclf import cli, metric_writers, models, parallel, presets, results, train
from seqclf.data import load_encoded
from seqclf.errors import ConfigError
from seqclf.lstm import resolve_engine

DEFAULT_BUCKETS = 6

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py"),
  "Config file (ml_collections get_config()).",
  lock_config=True,
)
_VARIANTS = flags.DEFINE_string(
  "variants", None, f"'all' or a comma-separated list of {', '.join(models.VARIANTS)}. Default: the config's."
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs per run. Default: the config's (3).")
_SEEDS = flags.DEFINE_string("seeds", None, "Comma-separated seeds; one run per variant and seed.")
_ENGINE = flags.DEFINE_list(
  "engine",
  None,
  "LSTM engine(s): auto or names in seqclf.lstm.ENGINES, comma-"
  "separated to train each variant with each, side by side. Default: the config's.",
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/article", "Where results.json/.md and vocab.json go.")
_IMDB = flags.DEFINE_string(
  "imdb",
  cli.default_imdb_source(),
  "IMDB source: 'tfds' or a local aclImdb .tar.gz / directory (default: $SEQCLF_IMDB, else tfds).",
)
_CACHE_DIR = flags.DEFINE_string(
  "cache_dir", None, "Encoded-data cache (default $SEQCLF_CACHE or ~/.cache/seqclf)."
)
_BUCKETING = flags.DEFINE_bool(
  "bucketing",
  False,
  "Length-bucketed, masked batches (sets "
  f"--config.num_buckets={DEFAULT_BUCKETS} unless the config sets a count).",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Multi-host: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "Multi-host: this process's index.")
_PEERS = flags.DEFINE_string(
  "peers",
  "",
  "Also train each variant with these, same data and "
  "hyper-parameters: torch, keras (pip install -e .[peers]).",
)
_TENSORBOARD = flags.DEFINE_bool(
  "tensorboard", True, "Write TensorBoard event files beside WORKDIR/logs/<run>/metrics.jsonl."
)


def parse_seeds(spec: str) -> list[int]:
  try:
    seeds = [int(s) for s in spec.split(",") if s.strip()]
  except ValueError:
    raise ConfigError(f"--seeds must be comma-separated integers, got {spec!r}") from None
  if not seeds:
    raise ConfigError("--seeds is empty; pass e.g. --seeds=0 or --seeds=1,2")
  return seeds


def summary_rows(runs: list[dict]) -> list[list]:
  """One row per (variant, engine): median epoch time, mean final test accuracy over seeds.

  Every row after a variant's first (another engine, or a peer: torch, keras) also says how many times
  faster the first engine was than that row.
  """
  rows, ours_s = [], {}
  for variant, engine in dict.fromkeys((run["variant"], run["engine"]) for run in runs):
    mine = [run for run in runs if (run["variant"], run["engine"]) == (variant, engine)]
    epoch_s = sorted(e["epoch_s"] for run in mine for e in run["epochs"])
    median_s = epoch_s[len(epoch_s) // 2]
    accs = [run["epochs"][-1]["test_acc"] for run in mine]
    acc = f"{100 * sum(accs) / len(accs):.2f} %"
    if len(accs) > 1:
      acc += f" (±{100 * (max(accs) - min(accs)) / 2:.2f})"
    compile_s = sum(run["compile_s"] for run in mine) / len(mine)
    if variant in ours_s:
      speedup = f"{median_s / ours_s[variant]:.2f}x"
    else:
      ours_s[variant] = median_s
      speedup = "–"
    article_s, article_acc = models.ARTICLE_RESULTS.get(variant, (None, None))
    rows.append(
      [
        variant,
        engine,
        f"{median_s:.2f}",
        f"{compile_s:.2f}",
        acc,
        speedup,
        article_s if article_s else "–",
        f"{100 * article_acc:.2f} %" if article_acc else "–",
      ]
    )
  return rows


TABLE_HEADER = [
  "variant",
  "engine",
  "s/epoch",
  "compile s",
  "test acc",
  "first engine's speed-up",
  "article s/epoch",
  "article acc",
]


def create_model(variant: str, engine: str, config):
  return models.create(variant, vocab_size=config.top_words, **{**config.model, "engine": engine})


def train_one(model, variant: str, trainer: str, seed: int, data, config, workdir) -> dict:
  """Trains one (variant, engine or peer, seed) run, printing each epoch and logging its metrics."""
  writer = None
  if workdir:
    writer = metric_writers.create_default_writer(
      os.path.join(workdir, "logs", f"{variant}-{trainer}-seed{seed}"), tensorboard=_TENSORBOARD.value
    )
    writer.write_hparams({"variant": variant, "engine": trainer, "seed": seed, **config.to_dict()})

  def report(m):
    print(
      f"{variant} [{trainer}] seed {seed} epoch {m.epoch}: {m.epoch_s:.2f} s ({m.examples_per_s:,.0f} "
      f"ex/s) train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | test loss {m.test_loss:.4f} "
      f"acc {m.test_acc:.4f}",
      flush=True,
    )
    if writer:
      writer.write_scalars(m.epoch, metric_writers.epoch_scalars(m))
      writer.flush()

  try:
    if trainer in peers.PEERS:
      return peers.fit_peer(trainer, variant, data, config, seed=seed, on_epoch=report)
    return train.fit(model, data, config, seed=seed, label=variant, on_epoch=report)[0]
  finally:
    if writer:
      writer.close()


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value.unlock()
  if _BUCKETING.value and not config.num_buckets:
    config.num_buckets = DEFAULT_BUCKETS
  if _EPOCHS.value is not None:
    config.epochs = _EPOCHS.value
  if _ENGINE.value is not None:
    config.model.engine = ",".join(_ENGINE.value)
  if _SEEDS.value is not None:
    config.seeds = _SEEDS.value
  if _VARIANTS.value is not None:
    config.variants = _VARIANTS.value
  train.validate(config)
  variants = models.parse_variants(config.variants)
  seeds = parse_seeds(config.seeds)
  engines = list(dict.fromkeys(resolve_engine(name.strip()) for name in config.model.engine.split(",")))
  peer_names = peers.parse_peers(_PEERS.value)
  if peer_names and (config.mask or config.num_buckets or config.device_resident):
    raise ConfigError(
      "--peers trains the article's fixed-length setup; drop --bucketing / "
      "--config.mask / --config.device_resident to compare like with like"
    )
  for name in peer_names:  # after the flag checks: a wrong combination is named even without torch
    peers.load_peer(name)  # a missing framework fails now, not after training
  for variant in variants:  # catch bad model fields before loading data
    models.check_input_length(create_model(variant, engines[0], config), config.maxlen)
  workdir = _WORKDIR.value
  writer = jax.process_index() == 0  # every process trains; one writes
  if writer:
    results.write_text_atomic(os.path.join(workdir, ".write_check"), "")  # fail now, not after training
    os.remove(os.path.join(workdir, ".write_check"))

  data = load_encoded(
    _IMDB.value,
    top_words=config.top_words,
    maxlen=config.maxlen,
    padding=config.padding,
    truncating=config.truncating,
    cache_dir=_CACHE_DIR.value,
  )
  if writer:
    data.vocab.save(os.path.join(workdir, "vocab.json"))
  meta = results.collect_meta(config, flags={"imdb": _IMDB.value, "workdir": workdir, "preset": preset})
  runs = []
  for variant in variants:
    for trainer in [*engines, *peer_names]:
      model = None if trainer in peers.PEERS else create_model(variant, trainer, config)
      for seed in seeds:
        record = train_one(model, variant, trainer, seed, data, config, workdir if writer else None)
        runs.append({"variant": variant, "engine": trainer, **record})
        table = results.markdown_table(TABLE_HEADER, summary_rows(runs))
        if writer:
          results.write_json_atomic(
            os.path.join(workdir, "results.json"),
            {"schema_version": results.SCHEMA_VERSION, "kind": "article", "meta": meta, "runs": runs},
          )
          results.write_text_atomic(os.path.join(workdir, "results.md"), table)
  print()
  print(table, end="")
  print(f"\nwrote {os.path.join(workdir, 'results.json')}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

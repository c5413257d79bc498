r"""Reproduces the tutorial's table: trains the variants on IMDB and reports s/epoch and test accuracy.

  python -m seqclf.benchmarks.article --workdir=runs/article            # 4 variants x 3 seeds, official archive
  python -m seqclf.benchmarks.article --imdb=aclImdb_v1.tar.gz --seeds=0   # a local archive, the quick run
  python -m seqclf.benchmarks.article --variants=lstm,cnn_lstm --epochs=1 --seeds=1,2 --engine=scan \
      --config=article_tiny --config.batch_size=8
  python -m seqclf.benchmarks.article --variants=lstm --seeds=0,1,2 --peers=keras --peers_only   # Keras 3 alone

Each row is one variant trained with one engine (an LSTM engine of seqclf.rnn, or a peer framework:
torch, keras) over the config's seeds: the mean final test accuracy ± its sample standard deviation over
the seeds, whether the article's figure lies within that spread, the median s/epoch over seeds and
epochs, and the distribution over the seeds: the mean's standard error, the median, the collapse rate
(final test accuracy under 80 %) with 95 % intervals, and each seed's accuracy, a collapsed run marked; a
second table has every run's test accuracy per epoch. Writes ``WORKDIR/results.json`` (schema in WORKSPACE.md), ``WORKDIR/results.md`` (the printed
table) and ``WORKDIR/vocab.json``; both result files are rewritten after every finished run, atomically.

Run again with the same flags on the same ``--workdir`` (after a kill, say), it keeps the runs already in
``results.json`` and trains only the others, provided that file was written with the same config (the
run list aside: variants, seeds and engines may grow), data (the flags and a digest of the encoded
reviews and vocabulary, so a changed aclImdb at the same path is other data) and code version (git commit
and dirty state); otherwise it refuses before writing anything. ``--restart`` starts over and replaces them.
One process at a time trains in a workdir (it holds ``WORKDIR/.lock``); a second is refused.
"""

import contextlib
import os
import shutil
import time

import jax
from absl import flags

from seqclf import (
  checkpoint,
  cli,
  configs,
  imdb_flags,
  lowering,
  metric_writers,
  models,
  parallel,
  presets,
  profiling,
  results,
  run_identity,
  train,
)
from seqclf.benchmarks import article_report, faults, peers
from seqclf.data import imdb
from seqclf.errors import ConfigError, DataError, Interrupted, StorageError, UsageError

DEFAULT_BUCKETS = 6

imdb_flags.define_flags()
presets.define_flags()
profiling.define_flags()
_CONFIG = cli.define_config(configs.path("article"))
_VARIANTS = flags.DEFINE_string(
  "variants",
  None,
  f"Shortcut for --config.variants: {' or '.join(repr(g) for g in models.VARIANT_GROUPS)} (the article's "
  f"four LSTM variants; every variant), or a comma-separated list of {', '.join(models.VARIANTS)}, each once.",
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Shortcut for --config.epochs: epochs per run.")
_SEEDS = flags.DEFINE_string(
  "seeds", None, "Shortcut for --config.seeds: comma-separated seeds, each once (default 0,1,2)."
)
_ENGINE = flags.DEFINE_list(
  "engine",
  None,
  "Shortcut for --config.model.engine: LSTM engine(s), auto or names in seqclf.rnn.engines.ENGINES, "
  "comma-separated to train each variant with each, side by side.",
)
# A shortcut given on the command line sets its field; given with its --config.* spelling it is refused.
_SHORTCUTS = {"variants": "variants", "epochs": "epochs", "seeds": "seeds", "engine": "model.engine"}
_WORKDIR = flags.DEFINE_string("workdir", "runs/article", "Where results.json/.md and vocab.json go.")
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
_RESTART = flags.DEFINE_bool(
  "restart",
  False,
  "Train every run again, replacing the runs an earlier invocation left in WORKDIR/results.json.",
)
_PEERS_ONLY = flags.DEFINE_bool(
  "peers_only",
  False,
  "Train only the --peers, no seqclf engine: each framework in its own process, e.g. for seed "
  "distributions measured side by side.",
)
_SKIP_UNSUPPORTED = flags.DEFINE_bool(
  "skip_unsupported",
  False,
  "Leave out the (variant, engine) pairs an engine cannot train (say, flax with recurrent dropout), each "
  "with a table row saying why, instead of refusing the sweep before it trains.",
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
  for seed in seeds:
    train.check_seed(seed, "--seeds")
  refuse_duplicates(seeds, "--seeds")
  return seeds


def refuse_duplicates(values: list, flag: str) -> None:
  """A run named twice would train twice and count as two samples of the spread over seeds.

  Raises:
    ConfigError: Naming the values given more than once.
  """
  repeated = sorted({str(value) for value in values if values.count(value) > 1})
  if repeated:
    raise ConfigError(
      f"{flag} names {', '.join(repeated)} more than once; name each once (a run trained twice would count "
      "as two samples)"
    )


# Config fields that list the runs rather than set them up: an invocation may add variants, seeds or
# engines to a workdir's earlier runs.
_RUN_LIST_FIELDS = ("variants", "seeds", "model.engine")


def _setup(meta: dict) -> dict:
  """What makes runs of two invocations comparable: config (less the run list), data flags, code version."""
  config = {key: value for key, value in meta["config"].items() if key not in _RUN_LIST_FIELDS}
  config["model"] = {key: value for key, value in config.get("model", {}).items() if key != "engine"}
  data_flags = {key: meta["flags"].get(key) for key in ("imdb", "imdb_sha256")}
  return {"config": config, "flags": data_flags, "git": meta["git"]}


def earlier_runs(path: str, meta: dict, restart: bool) -> list[dict]:
  """The runs of an earlier invocation in ``path`` to keep, or [] (none there, or ``restart``).

  Raises:
    ConfigError: they were trained with another setup (`_setup`): mixing them would make a table of
      incomparable rows.
    DataError: they were trained on other data (``meta["data"]``, a `run_identity.data_identity`); runs
      written before the data was recorded are taken as they are.
  """
  if restart or not os.path.exists(path):
    return []
  try:
    earlier = results.load(path)
  except UsageError as error:
    raise ConfigError(f"{error}; or pass --restart to train its runs again") from error
  if earlier.get("kind") != "article" or not isinstance(earlier.get("meta"), dict):
    raise ConfigError(f"{path} holds no article runs; pass another --workdir, or --restart to replace it")
  before, now = _setup(earlier["meta"]), _setup(meta)
  for part in ("config", "flags", "git"):
    changed = results.differences(before[part], now[part])
    if changed:
      what = {"config": "another config", "flags": "other data flags", "git": "another code version"}[part]
      raise ConfigError(
        f"{path} holds runs trained with {what} ({'; '.join(changed)}); pass --restart to replace them, "
        "or another --workdir"
      )
  saved_data = earlier["meta"].get("data")
  changed = saved_data and run_identity.data_changes(saved_data, meta["data"], imdb.LABELS, imdb.LABELS)
  if changed:
    raise DataError(
      f"{path} holds runs trained on other data: {changed}; pass --restart to replace them, or another "
      "--workdir to keep them"
    )
  return list(earlier["runs"])


def create_model(variant: str, engine: str, config):
  return models.create(variant, vocab_size=config.top_words, **{**config.model, "engine": engine})


def train_one(
  model, variant: str, engine: str, seed: int, data, config, workdir, progress: article_report.RunProgress
) -> dict:
  """Trains one (variant, engine, seed) run, printing each epoch and logging its metrics."""
  writer = None
  if workdir:
    logdir = os.path.join(workdir, "logs", f"{variant}-{engine}-seed{seed}")
    # A run trains from its first epoch (none is checkpointed), so what its log directory holds is an
    # earlier start's: one stopped before results.json had the run, or one --restart replaces. Kept,
    # those epochs would be reported twice.
    if os.path.exists(logdir):
      shutil.rmtree(logdir)
    writer = metric_writers.create_default_writer(logdir, tensorboard=_TENSORBOARD.value)
    writer.write_hparams({"variant": variant, "engine": engine, "seed": seed, **config.to_dict()})

  def report(m):
    print(
      f"{variant} [{engine}] seed {seed} epoch {m.epoch}: {m.epoch_s:.2f} s ({m.examples_per_s:,.0f} "
      f"ex/s) train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | test loss {m.test_loss:.4f} "
      f"acc {m.test_acc:.4f} | {progress.epoch_done()}",
      flush=True,
    )
    if writer:
      writer.write_scalars(m.epoch, metric_writers.epoch_scalars(m))
      writer.flush()

  progress.start_run(f"{variant} [{engine}] seed {seed}")
  try:
    if engine in peers.PEERS:
      return peers.fit_peer(engine, variant, data, config, seed=seed, on_epoch=report)
    trace = profiling.from_flags(f"{variant}-{engine}-seed{seed}")  # peers are not traced
    return train.fit(model, data, config, seed=seed, label=variant, on_epoch=report, trace=trace)[0]
  finally:
    if writer:
      writer.close()


def plan(engines: dict[str, list[str]], config) -> list[dict]:
  """The sweep's (variant, engine) pairs that cannot train, as ``{"variant", "engine", "reason"}``: found
  before the first run trains, so a sweep never fails hours in on what was knowable at its start.

  Raises:
    ConfigError: There are such pairs and --skip_unsupported was not given; the line names them.
  """
  refused = models.unsupported_pairs(
    engines,
    dict(config.model),
    masked=train.uses_mask(config),
    platform=lowering.target_platform(),
  )
  if refused and not _SKIP_UNSUPPORTED.value:
    reasons = "; ".join(f"{reason} ({variant} [{engine}])" for variant, engine, reason in refused)
    raise ConfigError(
      f"{reasons}: {len(refused)} (variant, engine) pair(s) of this sweep cannot train, found before "
      "training any; drop them from --variants/--engine, or pass --skip_unsupported to train the others "
      "with a table row saying why"
    )
  return [{"variant": variant, "engine": engine, "reason": reason} for variant, engine, reason in refused]


def main(argv):
  try:
    sweep(argv)
  except KeyboardInterrupt:
    path = os.path.join(_WORKDIR.value, "results.json")
    kept = f"the finished runs are in {path}" if os.path.exists(path) else "no run finished"
    # Again with --restart would replace the runs this invocation finished.
    again = "the same command again without --restart" if _RESTART.value else "the same command again"
    raise Interrupted(f"stopped by the user; {kept}: run {again} to train the others") from None
  except UsageError:
    raise
  except Exception as error:  # a write of the workdir failed: a vocabulary, a log, a results file
    cause = checkpoint.storage_cause(error)
    if cause is None:
      raise
    raise StorageError(
      f"cannot write {_WORKDIR.value} ({checkpoint.describe_os_error(cause)}); the runs finished so far are "
      "in its results.json: free space (or pass a writable --workdir) and run the same command again to "
      "train the others"
    ) from error


def sweep(argv):
  """Trains the sweep the flags describe, keeping the runs an earlier invocation finished."""
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config = _CONFIG.value.unlock()
  configs.check_fields(config, ("variants", "seeds"), "seqclf.benchmarks.article", "article")
  configs.apply_shortcuts(config, _SHORTCUTS)
  if _BUCKETING.value and not config.num_buckets:
    config.num_buckets = DEFAULT_BUCKETS
  variants = models.parse_variants(config.variants)
  refuse_duplicates(variants, "--variants")
  train.validate(config)  # each variant's cell: a GRU variant's engines are the GRU's, named as such
  seeds = parse_seeds(config.seeds)
  # Resolved for the model's gates: "auto" names the engine that trains them (the table's label).
  engines = models.resolve_engines(
    config.model.engine, variants, config.model.get("recurrent_activation", "sigmoid")
  )
  peer_names = peers.parse_peers(_PEERS.value)
  if _PEERS_ONLY.value and not peer_names:
    raise ConfigError("--peers_only trains the --peers only; name them, e.g. --peers=torch")
  # device_resident changes how the same fixed-length batches reach the steps (all on the device, no host
  # round trip per step), not what is learned: beside a peer it shows the kernel's epoch, not Python's.
  if peer_names and (config.mask or config.num_buckets):
    raise ConfigError(
      "--peers trains the article's fixed-length setup; drop --bucketing / --config.mask to compare "
      "like with like"
    )
  for name in peer_names:  # after the flag checks: a wrong combination is named even without torch
    peers.load_peer(name)  # a missing framework fails now, not after training
  skipped = plan({} if _PEERS_ONLY.value else engines, config)
  for variant in variants:  # catch bad model fields before loading data
    models.check_input_length(create_model(variant, engines[variant][0], config), config.maxlen)
  workdir = _WORKDIR.value
  writer = jax.process_index() == 0  # every process trains; one writes
  created = writer and not os.path.exists(workdir)
  try:
    # One process per workdir: a second would train every run again and overwrite the first's results.
    with checkpoint.RunLock(workdir) if writer else contextlib.nullcontext():
      train_sweep(workdir, writer, config, variants, seeds, engines, peer_names, skipped, preset)
  except BaseException:
    if created:  # a start refused before anything was written leaves no directory behind
      _remove_if_only_lock(workdir)
    raise


def _remove_if_only_lock(workdir):
  try:
    if os.listdir(workdir) == [".lock"]:
      os.remove(os.path.join(workdir, ".lock"))
      os.rmdir(workdir)
  except OSError:
    pass  # the directory stays, as it would have without this tidying


def train_sweep(workdir, writer, config, variants, seeds, engines, peer_names, skipped, preset):
  """Trains the sweep's runs the workdir's results.json does not hold yet; ``writer``: this process
  writes the workdir (and holds its lock)."""
  if writer:
    results.write_text_atomic(os.path.join(workdir, ".write_check"), "")  # fail now, not after training
    os.remove(os.path.join(workdir, ".write_check"))

  data = imdb_flags.load(config)
  meta = results.collect_meta(
    config,
    flags={
      "imdb": imdb_flags.IMDB.value,
      "imdb_sha256": imdb_flags.IMDB_SHA256.value,
      "workdir": workdir,
      "preset": preset,
    },
  )
  meta["data"] = run_identity.data_identity(
    run_identity.imdb_source(imdb_flags.IMDB.value),
    (data.x_train, data.y_train, data.x_test, data.y_test),
    data.vocab,
  )
  results_path = os.path.join(workdir, "results.json")
  runs = earlier_runs(results_path, meta, _RESTART.value)
  if runs and jax.process_count() > 1:
    raise ConfigError(
      f"{results_path} holds earlier runs and this invocation runs {jax.process_count()} processes, which "
      "would have to agree on what to skip; pass --restart or another --workdir"
    )
  if writer:  # after the earlier runs are accepted: a refused resume leaves their vocabulary
    data.vocab.save(os.path.join(workdir, "vocab.json"))
  done = {(run["variant"], run["engine"], run["seed"]) for run in runs}
  trained = {v: [*([] if _PEERS_ONLY.value else engines[v]), *peer_names] for v in variants}
  left_out = {(pair["variant"], pair["engine"]) for pair in skipped}
  planned = [(v, e, s) for v in variants for e in trained[v] for s in seeds if (v, e) not in left_out]
  if done & set(planned):
    print(
      f"keeping {len(done & set(planned))} run(s) already in {results_path} (--restart trains them again)"
    )
  progress = article_report.RunProgress(len([key for key in planned if key not in done]), config.epochs)
  table = article_report.markdown(runs, skipped)
  for variant in variants:
    for engine in trained[variant]:
      if (variant, engine) in left_out:
        continue
      model = None if engine in peers.PEERS else create_model(variant, engine, config)
      for seed in seeds:
        if (variant, engine, seed) in done:
          continue
        faults.inject(faults.unit("article", variant, engine))
        record = train_one(model, variant, engine, seed, data, config, workdir if writer else None, progress)
        runs.append({"variant": variant, "engine": engine, **record})
        table = article_report.markdown(runs, skipped)
        if writer:
          results.write_json_atomic(
            results_path,
            {
              "schema_version": results.SCHEMA_VERSION,
              "kind": "article",
              "meta": meta,
              "runs": runs,
              "skipped": skipped,
            },
          )
          results.write_text_atomic(os.path.join(workdir, "results.md"), table)
  print()
  print(table, end="")
  training_s = time.perf_counter() - progress.start
  print(
    f"\ntest acc: mean ± sample standard deviation over the seeds (se: of the mean); median and "
    f"collapse rate with 95 % intervals; training took {article_report.duration(training_s)}"
  )
  print(f"wrote {os.path.join(workdir, 'results.json')}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

r"""Trains one model into a run directory: checkpoints, resume, own datasets, validation, early stopping.

  python -m seqclf.main --workdir=runs/imdb_lstm --imdb=aclImdb_v1.tar.gz \
      --config.val_fraction=0.1 --config.patience=2 --config.epochs=10
  python -m seqclf.main --config=cnn_lstm --workdir=runs/imdb_cnn_lstm
  python -m seqclf.main --workdir=runs/topics --train_file=train.csv --test_file=test.csv --variant=cnn_lstm
  python -m seqclf.predict --workdir=runs/topics "a new text"

The run directory gets ``config.json`` and ``vocab.json`` (what prediction needs), ``checkpoints/`` (last
and best epoch, orbax), ``logs/`` (TensorBoard + JSONL) and ``results.json`` (kind "train", with the final
test accuracy of the best checkpoint when a validation split chose it). Started again on the same
directory it resumes after the last saved epoch; another config, other data or fewer epochs than trained
are refused before anything there is written (`seqclf.run_identity`).
"""

import os
import statistics

from absl import flags

from seqclf import (
  checkpoint,
  cli,
  configs,
  imdb_flags,
  metric_writers,
  models,
  presets,
  profiling,
  results,
  run_identity,
  train,
)
from seqclf.benchmarks.article_report import duration
from seqclf.data import embeddings, imdb
from seqclf.data.cache import EncodedDataset
from seqclf.data.encoding import encode
from seqclf.data.text_files import encode_text_dataset, load_text_dataset, split_validation
from seqclf.errors import ConfigError, DataError, Interrupted, StorageError

imdb_flags.define_flags()
presets.define_flags()
profiling.define_flags()
_CONFIG = cli.define_config(configs.path("run"))
_WORKDIR = flags.DEFINE_string("workdir", None, "The run directory (created, or resumed).")
_VARIANT = flags.DEFINE_string(
  "variant", None, f"Shortcut for --config.variant, the model variant: {', '.join(models.VARIANTS)}."
)
# A shortcut given on the command line sets its field; given with its --config.* spelling it is refused.
_SHORTCUTS = {"variant": "variant"}
# The fields seqclf.main reads beyond the shared training setup (seqclf/configs/run.py).
_RUN_FIELDS = ("variant", "val_fraction", "patience", "pretrained_embeddings")
_SEED = flags.DEFINE_integer(
  "seed", 0, "Seed for initialisation, shuffling, dropout and the validation split."
)
_TRAIN_FILE = flags.DEFINE_string(
  "train_file", None, "Own dataset: a .csv/.tsv/.jsonl file of texts and labels."
)
_TEST_FILE = flags.DEFINE_string("test_file", None, "Own dataset: held-out test file (same format).")
_TEXT_FIELD = flags.DEFINE_string(
  "text_field", "text", "The header's column (CSV/TSV) or key (JSONL) of the text."
)
_LABEL_FIELD = flags.DEFINE_string(
  "label_field",
  "label",
  "The header's column (CSV/TSV) or key (JSONL) of the label: class names, or ids 0..C-1.",
)
_TENSORBOARD = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard event files into RUN/logs.")


def load_data(config, seed: int):
  """-> (data evaluated every epoch, held-out test set or None, label names, the data's identity)."""
  if _TRAIN_FILE.value:
    texts = load_text_dataset(
      _TRAIN_FILE.value,
      _TEST_FILE.value,
      val_fraction=config.val_fraction,
      seed=seed,
      text_field=_TEXT_FIELD.value,
      label_field=_LABEL_FIELD.value,
    )
    data = encode_text_dataset(
      texts,
      top_words=config.top_words,
      maxlen=config.maxlen,
      padding=config.padding,
      truncating=config.truncating,
    )
    test = None
    if texts.validation is not None and texts.test is not None:
      test = (
        encode(
          texts.test.texts, data.vocab, config.maxlen, padding=config.padding, truncating=config.truncating
        ),
        texts.test.labels,
      )
    label_names = texts.label_names
    source = run_identity.own_files_source(
      _TRAIN_FILE.value, _TEST_FILE.value, _TEXT_FIELD.value, _LABEL_FIELD.value
    )
  else:
    source = run_identity.imdb_source(imdb_flags.IMDB.value)
    data, test, label_names = imdb_flags.load(config), None, list(imdb.LABELS)
    if config.val_fraction:
      x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, config.val_fraction, seed)
      data, test = EncodedDataset(x_train, y_train, x_val, y_val, data.vocab), (data.x_test, data.y_test)
  arrays = (data.x_train, data.y_train, data.x_test, data.y_test, *(test or (None, None)))
  return data, test, label_names, run_identity.data_identity(source, arrays, data.vocab)


def _check_data_kind(run_dir: str) -> None:
  """Refuses to resume a run on IMDB that was trained on its own files, or the other way round, before
  any data is read: IMDB may first have to be downloaded (84 MB), only for the run to be refused."""
  saved = (
    checkpoint.read_run_data(run_dir)
    if os.path.exists(os.path.join(run_dir, checkpoint.CONFIG_FILE))
    else None
  )
  if saved is None or ("imdb" in saved["source"]) != bool(_TRAIN_FILE.value):
    return  # no recorded data, or data of the same kind: the data's own identity is checked once read
  source = saved["source"]
  if "imdb" in source:
    was, flags_used = f"IMDB from {source['imdb']}", f"--imdb={source['imdb']} and no --train_file"
  else:
    named = [f"--{key}={source[key]['path']}" for key in ("train_file", "test_file") if source.get(key)]
    named += [f"--{key}={source[key]}" for key in ("text_field", "label_field")]
    was, flags_used = f"--train_file={source['train_file']['path']}", " ".join(named)
  now = f"--train_file={_TRAIN_FILE.value}" if _TRAIN_FILE.value else f"IMDB from {imdb_flags.IMDB.value}"
  raise DataError(
    f"{run_dir} was trained on other data: the data source (was {was}, now {now}); pass {flags_used} to "
    "resume it, or another --workdir to train on this data"
  )


def named_by_split(epoch: dict, split: str) -> dict:
  """An epoch's metrics with the evaluated split's under its own name: ``train.fit`` calls the split it
  evaluates every epoch ``test``; with a validation split carved out, ``test_acc`` is ``validation_acc``."""
  return {f"{split}_{key[5:]}" if key.startswith("test_") else key: value for key, value in epoch.items()}


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  if not _WORKDIR.value:
    raise ConfigError("--workdir is required: the run directory to create or resume")
  config, run_dir, seed = _CONFIG.value, _WORKDIR.value, _SEED.value
  checkpoint.check_run_dir(run_dir)
  if _TRAIN_FILE.value and imdb_flags.given():
    raise ConfigError("--imdb and --imdb_sha256 choose the IMDB data, unused with --train_file: drop them")
  own_data_flags = [name for name in ("test_file", "text_field", "label_field") if flags.FLAGS[name].present]
  if own_data_flags and not _TRAIN_FILE.value:
    raise ConfigError(f"--{own_data_flags[0]} describes an own dataset: pass --train_file too, or drop it")
  configs.check_fields(config, _RUN_FIELDS, "seqclf.main", "run")
  configs.apply_shortcuts(config, _SHORTCUTS)
  variant = config.variant
  train.check_seed(seed)
  train.validate(config)
  if not 0 <= config.val_fraction < 1:
    raise ConfigError(f"--config.val_fraction must be in [0, 1), got {config.val_fraction}")
  if not isinstance(config.patience, int) or isinstance(config.patience, bool) or config.patience < 0:
    raise ConfigError(
      f"--config.patience must be an integer >= 0 (0: never stop early), got {config.patience!r}"
    )
  if config.patience and not config.val_fraction:
    raise ConfigError(
      "--config.patience needs a validation split: set --config.val_fraction (e.g. 0.1); "
      "stopping on the test split would tune on test"
    )
  models.check_input_length(models.create(variant, **config.model), config.maxlen)
  run_identity.check_resumable(run_dir, config, variant, seed)  # before the data: the cheap refusals
  _check_data_kind(run_dir)
  data, test, label_names, data_id = load_data(config, seed)
  model = models.create(variant, vocab_size=config.top_words, num_classes=len(label_names), **config.model)
  initial_embedding = None
  if config.pretrained_embeddings:
    initial_embedding, coverage = embeddings.load_pretrained(
      config.pretrained_embeddings, data.vocab, config.model.embed_dim, seed=seed
    )
    print(f"pretrained embeddings: {coverage:.1%} of the vocabulary found in {config.pretrained_embeddings}")
  with checkpoint.RunLock(run_dir):
    # Again, now with the data, and under the lock: another process may have begun the run meanwhile.
    run_identity.check_resumable(run_dir, config, variant, seed, data=data_id, label_names=label_names)
    try:
      train_in(
        run_dir, config, variant, seed, model, (data, test, label_names, data_id), initial_embedding, preset
      )
    except KeyboardInterrupt:
      raise Interrupted(f"stopped by the user; {checkpoint.resume_hint(run_dir)}") from None
    except (StorageError, DataError):  # already one line; a DataError is a read, not a write
      raise
    except Exception as error:  # a write of the run directory failed: the OS's, orbax's, or JSON's error
      cause = checkpoint.storage_cause(error)
      if cause is None:
        raise
      raise StorageError(
        f"cannot write the run directory ({checkpoint.describe_os_error(cause)}); "
        f"{checkpoint.resume_hint(run_dir)} once it has room (or is writable)"
      ) from error


def train_in(run_dir, config, variant, seed, model, dataset, initial_embedding, preset):
  """Trains (or resumes) the run in ``run_dir``, whose lock this process holds, and writes its results.

  ``dataset``: `load_data`'s (data, test, label names, data identity). The run's files are written once
  its checkpoint is restored, so a start refused on the way (say, a damaged checkpoint) rewrites none.
  """
  data, test, label_names, data_id = dataset
  eval_name = "validation" if config.val_fraction else "test"
  writer = None

  def scalars(m):
    named = metric_writers.epoch_scalars(m)
    return {name.replace("test/", f"{eval_name}/", 1): value for name, value in named.items()}

  def start(history):
    nonlocal writer
    checkpoint.write_run_config(
      run_dir, config, variant=variant, seed=seed, label_names=label_names, data=data_id
    )
    data.vocab.save(os.path.join(run_dir, checkpoint.VOCAB_FILE))
    writer = metric_writers.create_default_writer(
      os.path.join(run_dir, "logs"), tensorboard=_TENSORBOARD.value
    )
    writer.write_hparams({"variant": variant, "seed": seed, **config.to_dict()})
    # Epochs reported after the checkpoint restored (the last one moved away as damaged) are trained again.
    writer.drop_after(history[-1]["epoch"] if history else 0)
    # Epochs saved by an earlier process that stopped before reporting them: reported now, once.
    writer.write_missing({e["epoch"]: scalars(train.EpochMetrics(**e)) for e in history})
    writer.flush()

  epoch_seconds = []  # this process's epochs, for the time left

  def report(m):
    epoch_seconds.append(m.epoch_s)
    left = statistics.median(epoch_seconds) * (config.epochs - m.epoch)
    print(
      f"epoch {m.epoch}/{config.epochs}: {m.epoch_s:.2f} s ({m.examples_per_s:,.0f} ex/s) train loss "
      f"{m.train_loss:.4f} acc {m.train_acc:.4f} | {eval_name} loss {m.test_loss:.4f} acc {m.test_acc:.4f}"
      f" | {duration(left)} left",
      flush=True,
    )
    writer.write_scalars(m.epoch, scalars(m))
    writer.flush()

  try:
    record, state = train.fit(
      model,
      data,
      config,
      seed=seed,
      label=variant,
      on_epoch=report,
      on_start=start,
      run_dir=run_dir,
      initial_embedding=initial_embedding,
      trace=profiling.from_flags(),
    )
  finally:
    if writer:
      writer.close()
  if record["stopped_early"]:
    last = record["epochs"][-1]["epoch"]
    print(
      f"stopped early after epoch {last}/{config.epochs}: no better {eval_name} accuracy in the last"
      f" {config.patience} epoch(s) (--config.patience={config.patience})"
    )
  record.update(
    variant=variant,
    eval_split=eval_name,
    label_names=label_names,
    epochs=[named_by_split(epoch, eval_name) for epoch in record["epochs"]],
  )
  if test is not None:  # the held-out test set, scored once with the checkpoint validation chose
    with checkpoint.Checkpointer(run_dir, writable=False) as checkpointer:
      best, best_epoch, _ = checkpointer.restore_best(state)
    test_loss, test_acc = train.evaluate(model, best.params, *test, config)
    record["final_test"] = {"best_epoch": best_epoch, "test_loss": test_loss, "test_acc": test_acc}
    print(f"test accuracy of the best epoch ({best_epoch}): {record['final_test']['test_acc']:.4f}")
  meta = results.collect_meta(
    config, flags={"workdir": run_dir, "variant": variant, "seed": seed, "preset": preset}
  )
  results.write_json_atomic(
    os.path.join(run_dir, "results.json"),
    {"schema_version": results.SCHEMA_VERSION, "kind": "train", "meta": meta, "runs": [record]},
  )
  print(f"wrote {os.path.join(run_dir, 'results.json')}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

"""Classifying new texts with a run that `seqclf.main` trained (``seqclf/benchmarks/article.py`` keeps no
checkpoints: its workdir holds results, not runs).

  python -m seqclf.predict --workdir=runs/imdb_lstm "A great film" "Dull and far too long"
  python -m seqclf.predict --workdir=runs/mine --which=last --json --input=reviews.txt
  cat reviews.txt | python -m seqclf.predict --workdir=runs/mine --input=-

Texts are encoded exactly as in training: the same tokenizer, the run's saved vocabulary, and the run
config's maxlen, padding and truncation (so a long text keeps the words training would have kept, and
unknown words become the out-of-vocabulary id). Prints one line per text,
``label<TAB>probability<TAB>text prefix``, or with ``--json`` one JSON object per line.

From Python::

  predictor = predict.load("runs/mine")
  predictor.predict(["A great film"])  # -> [Prediction(label="pos", probability=0.93, ...)]
"""

import dataclasses
import json
import os
import sys
import types
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from seqclf import checkpoint, cli, models, train
from seqclf.data import batching
from seqclf.data.encoding import PAD_ID, Vocabulary, encode
from seqclf.errors import ConfigError, DataError, UsageError

_PREFIX_CHARS = 60
# The keys of a run's config.json prediction reads: the model's fields and how training encoded texts.
RESULTS_FILE = "results.json"  # what seqclf.main writes when a run's training ends
_CONFIG_KEYS = ("model", "top_words", "maxlen", "padding", "truncating", "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class Prediction:
  """The classification of one text.

  Attributes:
    label: The predicted class name.
    probability: The predicted class's probability.
    probabilities: Every class name's probability (they sum to 1).
  """

  label: str
  probability: float
  probabilities: dict[str, float]


class Predictor:
  """A trained model with the vocabulary and encoding options of its run."""

  def __init__(
    self, model: models.SequenceClassifier, params, vocab: Vocabulary, config: dict, label_names: list[str]
  ):
    """Wraps a model whose parameters have already been checked against it; see :func:`load`."""
    self.vocab, self.config, self.label_names = vocab, config, label_names
    self._params = params
    # Inputs shaped as training fed them (feeding.HostFeeder): length-bucketed runs saw their reviews moved to
    # the front and masked; masked runs saw padding masked.
    self._left_align = bool(config.get("num_buckets"))
    use_mask = train.uses_mask(config)

    def logits_and_probabilities(params, tokens):
      logits = model.apply({"params": params}, tokens, tokens != PAD_ID if use_mask else None, train=False)
      if logits.ndim == 1:  # binary: the logit is log P(label 1) / P(label 0)
        return logits, jax.nn.sigmoid(jnp.stack([-logits, logits], axis=-1))
      return logits, jax.nn.softmax(logits, axis=-1)

    self._logits_and_probabilities = jax.jit(logits_and_probabilities)

  def predict(self, texts: Sequence[str]) -> list[Prediction]:
    """Classifies ``texts``; empty texts and texts of unknown words get a prediction too.

    Args:
      texts: the texts, encoded as the run's training texts were.

    Returns:
      One `Prediction` per text, in order: ``label``, ``probability`` and every class's ``probabilities``.

    Raises:
      UsageError: ``texts`` is a single string instead of a sequence of them.
    """
    if isinstance(texts, str):
      raise UsageError("predict takes a list of texts, got one string: wrap it in a list")
    if not texts:
      return []
    x = encode(
      texts,
      self.vocab,
      self.config["maxlen"],
      padding=self.config["padding"],
      truncating=self.config["truncating"],
    )
    if self._left_align:
      x = batching.left_align(x, self.config["padding"])
    # One batch shape for every call of this size: a few texts don't pay for a full eval batch.
    batch_size = min(self.config["eval_batch_size"], len(texts))
    predictions = []
    for batch in batching.batches(x, np.zeros(len(x), np.int32), batch_size):
      logits, probabilities = jax.device_get(self._logits_and_probabilities(self._params, batch["tokens"]))
      for row in np.flatnonzero(batch["weights"]):
        predictions.append(self._prediction(logits[row], probabilities[row]))
    return predictions

  def _prediction(self, logits: np.ndarray, probabilities: np.ndarray) -> Prediction:
    # Decided from the logits exactly as training counts accuracy (a binary logit > 0 is label 1).
    label_id = int(logits > 0) if logits.ndim == 0 else int(np.argmax(logits))
    return Prediction(
      label=self.label_names[label_id],
      probability=float(probabilities[label_id]),
      probabilities={name: float(p) for name, p in zip(self.label_names, probabilities)},
    )


def find_run_dir(path: str) -> str:
  """``path`` if it is a run directory, else the single run directory below it.

  Args:
    path: a run directory or a directory above one.

  Returns:
    The run directory.

  Raises:
    DataError: ``path`` does not exist, is a file, or holds no run.
    UsageError: ``path`` holds several runs (the message lists them).
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise DataError(f"workdir {path} is a file, not a run directory: pass the --workdir of a training run")
  if not os.path.isdir(path):
    raise DataError(f"workdir {path} does not exist: pass the --workdir of a training run")
  runs = []
  for directory, subdirectories, files in os.walk(path):
    if checkpoint.CONFIG_FILE in files:
      runs.append(directory)
      subdirectories.clear()  # runs do not nest, and a run's checkpoints are large trees
    subdirectories.sort()
  if not runs:
    raise DataError(
      f"no training run under {path} (no {checkpoint.CONFIG_FILE}): pass the --workdir of a training run"
    )
  if len(runs) > 1:
    names = ", ".join(os.path.relpath(run, path) for run in runs)
    raise UsageError(f"{path} holds {len(runs)} runs ({names}): pass one of them, e.g. --workdir={runs[0]}")
  return runs[0]


def _check_last_checkpoint(run_dir: str) -> None:
  """Refuses a run whose last trained epoch has no checkpoint (moved away as damaged, say): the last
  one left is an older epoch, which "last" would silently answer with."""
  try:
    with open(os.path.join(run_dir, RESULTS_FILE), encoding="utf-8") as f:
      trained = json.load(f)["runs"][0]["epochs"][-1]["epoch"]
  except (OSError, ValueError, LookupError, TypeError):
    return  # no record of the epochs trained (a run still training, say): the checkpoints tell
  saved = checkpoint.complete_epochs(run_dir)
  if saved and saved[-1] < trained:
    raise DataError(
      f"the last checkpoint of {run_dir}, epoch {trained} ({RESULTS_FILE}), is missing from "
      f"{os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)}, whose last is epoch {saved[-1]}: pass "
      f"--which=best, or resume the run with seqclf-train to save epoch {trained} again"
    )


def load(run_dir: str, which: str = "best") -> Predictor:
  """Loads a trained run for prediction.

  Args:
    run_dir: A run directory that `seqclf.main` wrote, or a directory holding exactly one (``runs/``
      with one run in it, say).
    which: The checkpoint to use: "best" (highest validation metric) or "last".

  Returns:
    A `Predictor`: ``load(run_dir).predict(["a text", ...])``.

  Raises:
    DataError: No run, no checkpoint, or files of the run that do not belong together.
    UsageError: ``run_dir`` holds several runs.
    ConfigError: ``which`` is neither "best" nor "last".
  """
  run_dir = find_run_dir(run_dir)
  config, variant, _, label_names = checkpoint.read_run_config(run_dir)
  missing = [key for key in _CONFIG_KEYS if key not in config]
  if missing or not isinstance(config["model"], dict):
    raise DataError(
      f"{os.path.join(run_dir, checkpoint.CONFIG_FILE)} lacks {', '.join(missing) or 'a model section'}, "
      "which prediction needs: the file was edited or is not a run's; restore it, or train the run again"
    )
  # Engines share one parameter layout, so "auto" runs a checkpoint from any device on this one.
  fields = {
    **config["model"],
    "vocab_size": config["top_words"],
    "num_classes": len(label_names),
    "engine": "auto",
  }
  try:  # a value training would refuse, edited in afterwards, fails here and not inside jax
    train.check_prediction_fields(config)
    models.check_fields({"cell": models.VARIANTS.get(variant, {}).get("cell", "lstm"), **fields})
  except ConfigError as error:
    raise DataError(
      f"{os.path.join(run_dir, checkpoint.CONFIG_FILE)}: {str(error).replace('--config.', '')}: the file "
      "was edited; restore it, or train the run again"
    ) from error
  if which == "last":
    _check_last_checkpoint(run_dir)
  vocab = Vocabulary.load(os.path.join(run_dir, checkpoint.VOCAB_FILE))
  params = checkpoint.restore_params(run_dir, which)
  model = models.create(variant, **fields)
  sample = jnp.zeros((1, config["maxlen"]), jnp.int32)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), sample)["params"])
  mismatch = checkpoint.describe_shape_mismatch(params, expected)
  if mismatch:
    raise DataError(
      f"{run_dir}: the checkpoint does not fit the model of {checkpoint.CONFIG_FILE} "
      f"({mismatch}): the run directory mixes files of different runs"
    )
  embedding_rows = params["embedding"].shape[0]
  if embedding_rows != vocab.top_words:
    raise DataError(
      f"{run_dir}: {checkpoint.VOCAB_FILE} has {vocab.top_words} ids but the checkpoint's "
      f"embedding has {embedding_rows} rows: the vocabulary comes from another run, copy the "
      "one that was trained with it"
    )
  return Predictor(model, params, vocab, config, label_names)


def _define_flags() -> types.SimpleNamespace:
  """Defines the command line's flags; only when run as a program, so that importing this module as a
  library claims no flag names (drivers that import it define their own --workdir)."""
  workdir = flags.DEFINE_string("workdir", None, "A run directory, or a workdir holding exactly one run.")
  flags.mark_flag_as_required("workdir")
  return types.SimpleNamespace(
    workdir=workdir,
    which=flags.DEFINE_enum(
      "which", "best", list(checkpoint.WHICH), "Checkpoint: best (highest validation metric) or last."
    ),
    json=flags.DEFINE_bool("json", False, "Print JSON lines with every class's probability."),
    input=flags.DEFINE_string(
      "input", None, "Read texts, one per line, from this file ('-': stdin) instead of the arguments."
    ),
  )


def read_texts(source: str) -> list[str]:
  """The lines of a UTF-8 file, one text each; a final newline ends the last text.

  Args:
    source: a file path, or ``-`` for stdin.

  Returns:
    The texts.

  Raises:
    DataError: The file is missing, unreadable or not UTF-8.
  """
  name = "stdin" if source == "-" else source
  try:
    if source == "-":
      data = sys.stdin.buffer.read()
    else:
      with open(source, "rb") as file:
        data = file.read()
    text = data.decode("utf-8-sig")
  except OSError as error:
    raise DataError(f"cannot read {name} ({error.strerror}): check the --input path") from error
  except UnicodeDecodeError as error:
    line = data[: error.start].count(b"\n") + 1
    raise DataError(f"{name} line {line} is not UTF-8 text: save the texts as UTF-8") from error
  lines = text.split("\n")  # not splitlines(): texts may contain other line separators such as U+2028
  if lines[-1] == "":
    lines.pop()
  return [line.removesuffix("\r") for line in lines]


def format_prediction(text: str, prediction: Prediction, as_json: bool) -> str:
  """One output line: ``label<TAB>probability<TAB>text prefix``, or a JSON object."""
  if as_json:
    return json.dumps(
      {
        "text": text,
        "label": prediction.label,
        "probability": prediction.probability,
        "probabilities": prediction.probabilities,
      },
      ensure_ascii=False,
    )
  prefix = " ".join(text.split())
  if len(prefix) > _PREFIX_CHARS:
    prefix = prefix[: _PREFIX_CHARS - 1] + "…"
  return f"{prediction.label}\t{prediction.probability:.4f}\t{prefix}"


def main(argv: list[str], options: types.SimpleNamespace) -> None:
  texts = argv[1:]
  if options.input.value is not None:
    if texts:
      raise UsageError("texts given both as arguments and with --input: use one of them")
    texts = read_texts(options.input.value)
  if not texts:
    raise UsageError(
      "no texts to classify: pass them as arguments, or --input=FILE (one per line, '-' for stdin)"
    )
  predictor = load(options.workdir.value, options.which.value)
  for text, prediction in zip(texts, predictor.predict(texts)):
    print(format_prediction(text, prediction, options.json.value))


def run() -> None:
  options = _define_flags()
  cli.run(lambda argv: main(argv, options))


if __name__ == "__main__":
  run()

"""Prediction from a run directory: the API, the command line, awkward texts and bad input."""

import json
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf import checkpoint, models, predict, train
from seqclf.configs import tiny
from seqclf.data import EncodedDataset, Vocabulary, encode
from seqclf.errors import ConfigError, DataError, UsageError
from tests import drivers

_POSITIVE = ["great", "good", "love", "superb"]
_NEGATIVE = ["bad", "awful", "hate", "boring"]
_FILLER = ["the", "movie", "plot", "acting", "film", "was", "a", "cast", "story", "and"]


def _texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
  """Short reviews whose label is given by one sentiment word among filler words."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  texts = []
  for label in labels:
    words = list(rng.choice(_FILLER, rng.integers(3, 12)))
    words.insert(rng.integers(0, len(words) + 1), rng.choice(_POSITIVE if label else _NEGATIVE))
    texts.append(" ".join(words))
  return texts, labels


def _config(**overrides):
  config = tiny.get_config()
  config.top_words = 24
  config.maxlen = 12
  config.epochs = 2
  config.batch_size = 8
  config.learning_rate = 1e-2
  config.model.engine = "fused"
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir holding one run (``<workdir>/lstm/seed_0``) of a binary model trained for 2 epochs."""
  config = _config()
  train_texts, y_train = _texts(64, seed=0)
  test_texts, y_test = _texts(24, seed=1)
  vocab = Vocabulary.fit(train_texts, config.top_words)
  encode_texts = lambda texts: encode(
    texts, vocab, config.maxlen, padding=config.padding, truncating=config.truncating
  )
  data = EncodedDataset(encode_texts(train_texts), y_train, encode_texts(test_texts), y_test, vocab)
  model = models.create("lstm", vocab_size=config.top_words, **config.model)
  record, state = train.fit(model, data, config, seed=0)

  workdir = tmp_path_factory.mktemp("work")
  run_dir = workdir / "lstm" / "seed_0"
  checkpoint.write_run_config(str(run_dir), config, variant="lstm", seed=0, label_names=["neg", "pos"])
  vocab.save(run_dir / checkpoint.VOCAB_FILE)
  with checkpoint.Checkpointer(str(run_dir)) as checkpointer:
    checkpointer.save(config.epochs, state, history=record["epochs"], metric=record["epochs"][-1]["test_acc"])
  return {
    "workdir": workdir,
    "run_dir": run_dir,
    "record": record,
    "state": state,
    "model": model,
    "test_texts": test_texts,
    "y_test": y_test,
    "encode": encode_texts,
  }


def _save_untrained_run(run_dir: pathlib.Path, label_names: list[str], variant: str = "lstm", **overrides):
  """A run directory with an untrained model's checkpoint: enough to exercise loading and shapes."""
  config = _config(**overrides)
  vocab = Vocabulary.fit([" ".join(_FILLER + _POSITIVE)], config.top_words)
  model = models.create(variant, vocab_size=config.top_words, num_classes=len(label_names), **config.model)
  params = model.init(jax.random.key(0), jnp.zeros((1, config.maxlen), jnp.int32))["params"]
  state = train.TrainState.create(apply_fn=model.apply, params=params, tx=train.make_optimizer(config))
  checkpoint.write_run_config(str(run_dir), config, variant=variant, seed=0, label_names=label_names)
  vocab.save(run_dir / checkpoint.VOCAB_FILE)
  with checkpoint.Checkpointer(str(run_dir)) as checkpointer:
    checkpointer.save(1, state, history=[], metric=None)
  return model, params, vocab, config


def test_predictions_reproduce_the_test_accuracy_of_training(trained):
  predictor = predict.load(str(trained["workdir"]))  # the workdir holds one run: found below it
  predictions = predictor.predict(trained["test_texts"])
  assert len(predictions) == len(trained["test_texts"])
  predicted = np.array([predictor.label_names.index(p.label) for p in predictions])
  accuracy = float(np.mean(predicted == trained["y_test"]))
  assert accuracy == pytest.approx(trained["record"]["epochs"][-1]["test_acc"], abs=1e-6)


def test_binary_probabilities_are_the_sigmoid_of_the_logit(trained):
  texts = trained["test_texts"][:5]
  predictions = predict.load(str(trained["run_dir"]), which="last").predict(texts)
  logits = trained["model"].apply({"params": trained["state"].params}, trained["encode"](texts))
  for prediction, logit in zip(predictions, np.asarray(logits)):
    positive = float(jax.nn.sigmoid(logit))
    assert prediction.probabilities["pos"] == pytest.approx(positive, rel=1e-6)
    assert prediction.probabilities["neg"] == pytest.approx(1 - positive, rel=1e-5)
    assert prediction.label == ("pos" if logit > 0 else "neg")
    assert prediction.probability == prediction.probabilities[prediction.label]


def test_empty_unknown_and_very_long_texts(trained):
  predictor = predict.load(str(trained["run_dir"]))
  maxlen = predictor.config["maxlen"]
  long_words = [_FILLER[i % len(_FILLER)] for i in range(5000)] + ["great"]
  empty, unknown, other_unknown, long, long_tail = predictor.predict(
    ["", "zyzzyva quokka", "xylem qintar", " ".join(long_words), " ".join(long_words[-maxlen:])]
  )
  assert empty.label in ("neg", "pos") and sum(empty.probabilities.values()) == pytest.approx(1.0)
  assert unknown == other_unknown  # every unknown word is the same out-of-vocabulary id
  assert long == long_tail  # "pre" truncation keeps the last maxlen words, as in training


def test_batches_give_the_same_predictions_as_single_texts(trained):
  predictor = predict.load(str(trained["run_dir"]))
  texts = trained["test_texts"][:11]  # not a multiple of the batch size: the last batch is padded
  batched, single = predictor.predict(texts), [predictor.predict([text])[0] for text in texts]
  # The same labels; probabilities to float32 rounding: XLA may pick other kernels (another summation
  # order) for another batch shape, so a batch of one and a full batch agree only to the last bits.
  assert [p.label for p in batched] == [p.label for p in single]
  for b, s in zip(batched, single):
    assert list(b.probabilities) == list(s.probabilities)
    np.testing.assert_allclose(list(b.probabilities.values()), list(s.probabilities.values()), rtol=1e-5)
    np.testing.assert_allclose(b.probability, s.probability, rtol=1e-5)
  assert predictor.predict([]) == []


def test_multi_class_probabilities_are_a_softmax(tmp_path):
  names = ["comedy", "drama", "horror"]
  model, params, vocab, config = _save_untrained_run(tmp_path, names)
  texts = ["great movie", "the plot"]
  predictions = predict.load(str(tmp_path)).predict(texts)
  x = encode(texts, vocab, config.maxlen, padding=config.padding, truncating=config.truncating)
  expected = np.asarray(jax.nn.softmax(model.apply({"params": params}, x), axis=-1))
  for prediction, probabilities in zip(predictions, expected):
    assert list(prediction.probabilities) == names
    np.testing.assert_allclose(list(prediction.probabilities.values()), probabilities, rtol=1e-6)
    assert prediction.label == names[int(np.argmax(probabilities))]


def test_masked_bucketed_runs_are_fed_as_in_training(tmp_path):
  model, params, vocab, config = _save_untrained_run(
    tmp_path, ["neg", "pos"], variant="cnn_lstm", num_buckets=2
  )
  texts = ["great movie and a plot", "the"]
  prediction = predict.load(str(tmp_path)).predict(texts)
  x = encode(texts, vocab, config.maxlen, padding=config.padding, truncating=config.truncating)
  x = np.stack([np.concatenate([row[row != 0], row[row == 0]]) for row in x])  # left aligned
  logits = np.asarray(model.apply({"params": params}, x, x != 0))
  np.testing.assert_allclose([p.probabilities["pos"] for p in prediction], jax.nn.sigmoid(logits), rtol=1e-6)


def test_a_string_instead_of_a_list_is_refused(trained):
  with pytest.raises(UsageError, match="list of texts"):
    predict.load(str(trained["run_dir"])).predict("a great film")


def test_bad_run_directories(trained, tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    predict.load(str(tmp_path / "missing"))
  with pytest.raises(DataError, match="no training run under"):
    predict.load(str(tmp_path))
  (tmp_path / "a_file").write_text("")
  with pytest.raises(DataError, match="a_file is a file, not a run directory"):  # it said "does not exist"
    predict.load(str(tmp_path / "a_file"))
  with pytest.raises(ConfigError, match="'best' or 'last'"):
    predict.load(str(trained["run_dir"]), which="first")

  two_runs = tmp_path / "two"
  for seed in ("seed_0", "seed_1"):
    shutil.copytree(trained["run_dir"], two_runs / "lstm" / seed)
  with pytest.raises(UsageError, match=r"holds 2 runs \(lstm/seed_0, lstm/seed_1\)"):
    predict.load(str(two_runs))

  untrained = tmp_path / "untrained"
  shutil.copytree(trained["run_dir"], untrained, ignore=shutil.ignore_patterns("checkpoints"))
  with pytest.raises(DataError, match="no checkpoints in"):
    predict.load(str(untrained))


def test_a_vocabulary_of_another_size_is_a_data_error(trained, tmp_path):
  run_dir = tmp_path / "mixed"
  shutil.copytree(trained["run_dir"], run_dir)
  Vocabulary(["great"], top_words=30).save(run_dir / checkpoint.VOCAB_FILE)
  with pytest.raises(DataError, match="vocab.json has 30 ids but the checkpoint's embedding has 24 rows"):
    predict.load(str(run_dir))


def test_a_config_of_another_model_is_a_data_error(trained, tmp_path):
  run_dir = tmp_path / "mixed"
  shutil.copytree(trained["run_dir"], run_dir)
  config = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  config["model"]["lstm_features"] += 1
  (run_dir / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  with pytest.raises(DataError, match="does not fit the model of config.json"):
    predict.load(str(run_dir))


def test_read_texts_keeps_blank_lines_and_refuses_bad_encoding(tmp_path):
  path = tmp_path / "texts.txt"
  path.write_bytes(b"first\r\n\nthird \xe2\x80\xa8 still third\n")
  assert predict.read_texts(str(path)) == ["first", "", "third \u2028 still third"]
  path.write_bytes(b"fine\ncaf\xe9\n")
  with pytest.raises(DataError, match="line 2 is not UTF-8"):
    predict.read_texts(str(path))
  with pytest.raises(DataError, match="cannot read"):
    predict.read_texts(str(tmp_path / "missing.txt"))


# --- The command line. -----------------------------------------------------------------------------------


def _run_cli(*args, stdin=None):
  return drivers.run("seqclf.predict", *args, stdin=stdin)


def test_cli_classifies_arguments(trained):
  texts = ["a great great film", "bad\tand   boring " * 10]
  result = _run_cli(f"--workdir={trained['workdir']}", *texts)
  assert result.returncode == 0, result.stderr
  expected = predict.load(str(trained["run_dir"])).predict(texts)
  lines = result.stdout.splitlines()
  assert len(lines) == 2
  for line, prediction in zip(lines, expected):
    label, probability, prefix = line.split("\t")
    assert (label, probability) == (prediction.label, f"{prediction.probability:.4f}")
  assert lines[1].split("\t")[2] == ("bad and boring " * 5)[:59] + "…"


def test_cli_reads_stdin_and_prints_json(trained):
  texts = ["a great film", "", "café überhaupt"]
  result = _run_cli(
    f"--workdir={trained['run_dir']}", "--which=last", "--json", "--input=-", stdin="\n".join(texts) + "\n"
  )
  assert result.returncode == 0, result.stderr
  expected = predict.load(str(trained["run_dir"]), which="last").predict(texts)
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [record["text"] for record in records] == texts
  for record, prediction in zip(records, expected):
    assert record["label"] == prediction.label
    assert record["probability"] == pytest.approx(prediction.probability, rel=1e-6)
    assert record["probabilities"] == pytest.approx(prediction.probabilities, rel=1e-6)


def test_cli_reads_an_input_file(trained, tmp_path):
  path = tmp_path / "texts.txt"
  path.write_text("great\nawful\n", encoding="utf-8")
  result = _run_cli(f"--workdir={trained['run_dir']}", f"--input={path}")
  assert result.returncode == 0, result.stderr
  assert [line.split("\t")[2] for line in result.stdout.splitlines()] == ["great", "awful"]


@pytest.mark.parametrize(
  "args,message",
  [
    (["great"], "--workdir"),
    (["--workdir={missing}", "great"], "does not exist"),
    (["--workdir={workdir}"], "no texts to classify"),
    (["--workdir={workdir}", "--input={missing}"], "cannot read"),
    (["--workdir={workdir}", "--which=first", "great"], "which"),
  ],
)
def test_cli_errors_are_one_line_with_exit_code_2(trained, tmp_path, args, message):
  args = [arg.format(workdir=trained["workdir"], missing=tmp_path / "missing") for arg in args]
  result = _run_cli(*args)
  assert result.returncode == 2
  assert result.stderr.startswith("error: ") and message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("key", ["maxlen", "model", "eval_batch_size"])
def test_a_config_missing_a_key_prediction_needs_is_a_data_error(trained, tmp_path, key):
  """It was a KeyError traceback."""
  run_dir = tmp_path / "edited"
  shutil.copytree(trained["run_dir"], run_dir)
  config = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  del config[key]
  (run_dir / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  with pytest.raises(DataError, match=f"config.json lacks {key}, which prediction needs"):
    predict.load(str(run_dir))


@pytest.mark.parametrize(
  "section,key,value,message",
  [
    (None, "maxlen", "abc", "maxlen must be a positive integer, got 'abc'"),
    (None, "padding", "middle", "padding must be 'pre' or 'post'"),
    ("model", "lstm_features", 0, "model.lstm_features must be an integer >= 1, got 0"),
  ],
)
def test_a_config_value_training_refuses_is_a_data_error(trained, tmp_path, section, key, value, message):
  """A value of the wrong type failed inside jax with a TypeError traceback; training refused it."""
  run_dir = tmp_path / "edited"
  shutil.copytree(trained["run_dir"], run_dir)
  config = json.loads((run_dir / checkpoint.CONFIG_FILE).read_text())
  (config[section] if section else config)[key] = value
  (run_dir / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  with pytest.raises(DataError, match=f"config.json: {re.escape(message)}.*the file was edited"):
    predict.load(str(run_dir))


def test_last_refuses_a_run_whose_last_checkpoint_is_missing(trained, tmp_path):
  """It answered from the older checkpoint left, saying nothing."""
  run_dir = tmp_path / "moved"
  shutil.copytree(trained["run_dir"], run_dir)
  saved = checkpoint.complete_epochs(str(run_dir))[-1]
  epochs = [{"epoch": epoch} for epoch in range(1, saved + 2)]  # one more epoch trained than is saved
  (run_dir / predict.RESULTS_FILE).write_text(json.dumps({"runs": [{"epochs": epochs}]}))
  with pytest.raises(
    DataError, match=f"epoch {saved + 1} .* is missing .* whose last is epoch {saved}: pass --which=best"
  ):
    predict.load(str(run_dir), which="last")
  predict.load(str(run_dir), which="best")
  (run_dir / predict.RESULTS_FILE).write_text(json.dumps({"runs": [{"epochs": epochs[:-1]}]}))
  predict.load(str(run_dir), which="last")

"""Checkpoints: exact round trips, last + best retention, interrupted saves, and a SIGKILLed run resumed.

The SIGKILL-and-resume test of the real training loop is in test_main.py.
"""

import errno
import gc
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seqclf import checkpoint, train
from seqclf.errors import ConfigError, DataError

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KILL_EPOCHS = 3
_KILL_SEED = 7


def _toy_state(scale: float = 1.0) -> train.TrainState:
  """A train state without a model, one Adam step in, so that every optimizer leaf is non-trivial."""
  params = {
    "dense": {
      "kernel": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4) * scale,
      "bias": jnp.full((4,), 0.5 * scale),
    }
  }
  state = train.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3, eps=1e-7))
  return state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))


def _assert_trees_bitwise_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_round_trip_is_bitwise(tmp_path):
  state = _toy_state()
  history = [{"epoch": 1, "test_acc": 0.123456789012345678}]
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, state, history=history, metric=0.5)
  with checkpoint.Checkpointer(str(tmp_path), writable=False) as checkpointer:
    restored, epoch, restored_history = checkpointer.restore_latest(_toy_state(scale=0.0))
  assert epoch == 1 and restored_history == history
  assert int(restored.step) == int(state.step) == 1
  _assert_trees_bitwise_equal(restored.params, state.params)
  _assert_trees_bitwise_equal(restored.opt_state, state.opt_state)


def test_keeps_the_last_and_the_best_checkpoint(tmp_path):
  states = {epoch: _toy_state(scale=epoch) for epoch in (1, 2, 3)}
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    for epoch, metric in ((1, 0.5), (2, 0.9), (3, 0.7)):
      checkpointer.save(epoch, states[epoch], history=[], metric=metric)
    assert checkpointer.epochs() == [2, 3]
    assert (checkpointer.best_epoch(), checkpointer.latest_epoch()) == (2, 3)
    best, best_epoch, _ = checkpointer.restore_best(_toy_state())
    latest, latest_epoch, _ = checkpointer.restore_latest(_toy_state())
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
  assert (best_epoch, latest_epoch) == (2, 3)
  _assert_trees_bitwise_equal(best.params, states[2].params)
  _assert_trees_bitwise_equal(latest.params, states[3].params)
  _assert_trees_bitwise_equal(checkpoint.restore_params(str(tmp_path), "best"), states[2].params)
  _assert_trees_bitwise_equal(checkpoint.restore_params(str(tmp_path), "last"), states[3].params)


def test_without_metrics_only_the_last_is_kept_and_counts_as_best(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    for epoch in (1, 2):
      checkpointer.save(epoch, _toy_state(scale=epoch), history=[], metric=None)
    assert checkpointer.epochs() == [2]
    assert checkpointer.best_epoch() == 2


def test_an_interrupted_save_is_ignored_then_cleaned_up(tmp_path):
  state = _toy_state()
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, state, history=[{"epoch": 1}], metric=0.5)
  checkpoints_dir = tmp_path / "checkpoints"
  # What a save killed before its rename leaves (any file system) ...
  (checkpoints_dir / "2.orbax-checkpoint-tmp-1700000000").mkdir()
  (checkpoints_dir / "2.orbax-checkpoint-tmp-1700000000" / "params").mkdir()
  # ... and, where rename is not atomic, a step directory missing its commit marker.
  uncommitted = checkpoints_dir / "3"
  uncommitted.mkdir()
  (uncommitted / "_CHECKPOINT_METADATA").write_text("{}")

  with checkpoint.Checkpointer(str(tmp_path), writable=False) as reader:
    assert reader.epochs() == [1]
    restored, epoch, history = reader.restore_latest(_toy_state(scale=0.0))
  assert epoch == 1 and history == [{"epoch": 1}]
  _assert_trees_bitwise_equal(restored.params, state.params)
  assert checkpoint.restore_params(str(tmp_path), "last")["dense"]["bias"].shape == (4,)

  with checkpoint.Checkpointer(str(tmp_path)) as writer:  # a resumed run saves epoch 2 again
    writer.save(2, _toy_state(scale=2.0), history=[], metric=0.6)
    assert writer.epochs() == [2]
  assert sorted(os.listdir(checkpoints_dir)) == ["2"]


def test_no_checkpoint_means_start_from_scratch(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    assert checkpointer.restore_latest(_toy_state()) is None
    assert checkpointer.restore_best(_toy_state()) is None
  with pytest.raises(DataError, match="no complete checkpoint"):
    checkpoint.restore_params(str(tmp_path))
  with pytest.raises(DataError, match="no checkpoints in"):
    checkpoint.restore_params(str(tmp_path / "elsewhere"))


def test_saving_an_epoch_again_is_refused(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(2, _toy_state(), history=[], metric=0.5)
    with pytest.raises(DataError, match="already has a checkpoint of epoch 2"):
      checkpointer.save(1, _toy_state(), history=[], metric=0.9)


def test_a_checkpoint_of_another_model_is_a_data_error(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, _toy_state(), history=[], metric=None)
    other_params = {"dense": {"kernel": jnp.zeros((5, 4)), "bias": jnp.zeros((4,))}}
    other_model = train.TrainState.create(apply_fn=None, params=other_params, tx=optax.adam(1e-3))
    with pytest.raises(
      DataError,
      match=r"another model \(parameter \['dense'\]\['kernel'\] is \(5, 4\) in "
      r"the model but \(3, 4\) in the checkpoint\)",
    ):
      checkpointer.restore_latest(other_model)
    clipped = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    other_optimizer = train.TrainState.create(apply_fn=None, params=_toy_state().params, tx=clipped)
    with pytest.raises(DataError, match="another optimizer state"):
      checkpointer.restore_latest(other_optimizer)


def test_a_damaged_checkpoint_silences_its_abandoned_reads(tmp_path, monkeypatch, capsys):
  """The error line came with up to 350 lines of "Event loop is closed" tracebacks from orbax's reads
  that were still pending, printed as their coroutines were collected."""
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, _toy_state(), history=[], metric=None)
  for path in (tmp_path / checkpoint.CHECKPOINT_DIR / "1" / "params").rglob("*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:10])
  monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
  with pytest.raises(DataError, match="is damaged"):
    checkpoint.restore_params(str(tmp_path))

  class Suspend:
    def __await__(self):
      yield

  async def pending_read():
    try:
      await Suspend()
    finally:  # as a read closed after its event loop: Python reports it as unraisable
      raise RuntimeError("Event loop is closed")

  def pending_generator():
    try:
      yield
    finally:
      raise RuntimeError("not a read")

  for start in (pending_read, pending_generator):
    abandoned = start()
    abandoned.send(None)
    del abandoned  # closes it, and what its close raises is unraisable
    gc.collect()
  err = capsys.readouterr().err
  assert "Event loop" not in err
  assert "RuntimeError: not a read" in err  # what is not an abandoned read is still printed


def test_restore_params_rejects_an_unknown_choice(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as checkpointer:
    checkpointer.save(1, _toy_state(), history=[], metric=None)
    with pytest.raises(ConfigError, match="'best' or 'last'"):
      checkpointer.restore_params("first")


def test_run_config_round_trip(tmp_path):
  config = ml_collections.ConfigDict({"top_words": 60, "model": {"embed_dim": 8}})
  checkpoint.write_run_config(str(tmp_path / "run"), config, variant="lstm", seed=3, label_names=["a", "b"])
  assert checkpoint.read_run_config(str(tmp_path / "run")) == (
    {"top_words": 60, "model": {"embed_dim": 8}},
    "lstm",
    3,
    ["a", "b"],
  )


def test_reading_a_missing_or_foreign_run_config_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="not a run directory"):
    checkpoint.read_run_config(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"top_words": 60}))
  with pytest.raises(DataError, match="lacks variant, seed, label_names"):
    checkpoint.read_run_config(str(tmp_path))


def test_tensorstores_full_disk_error_is_a_storage_error():
  """orbax hands on tensorstore's ValueError, whose text alone carries the OS error: it was a traceback."""
  error = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "0.mu.embedding/0.0" in OCDBT database at local file "/run/x": '
    "Failed to write 2700 bytes to file 13: No space left on device [os_error_code='28']"
  )
  assert checkpoint.storage_cause(RuntimeError("save failed")) is None
  try:
    raise RuntimeError("save failed") from error
  except RuntimeError as wrapped:
    cause = checkpoint.storage_cause(wrapped)
  assert cause.errno == errno.ENOSPC and checkpoint.describe_os_error(cause) == "No space left on device"
  assert checkpoint.storage_cause(ValueError("NOT_FOUND: ... [os_error_code='2']")) is None

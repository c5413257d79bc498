"""`auto` on a GPU checks its kernel engine against fused first, in a child process, and falls back.

On CPU the GPU path is exercised with engine modules that misbehave on purpose (`tests/fake_engines`: a
wrong one, a raising one, a hanging one, one killed by a signal, a correct one) and a faked default
backend, so the real check, child process and timeout included, runs end to end.
"""

import sys
import types

import jax
import pytest

from seqclf.rnn import api, engines
from seqclf.rnn.cells import LSTM_CELL
from seqclf.rnn.engines import auto_check, scan

HIDDEN = 7


def _candidate(kind):
  return auto_check.Candidate(kind, f"tests.fake_engines.{kind}", None)


def _register(monkeypatch, name, kind):
  """Makes the LSTM's engine ``name`` of `engines.ENGINES` the fake engine ``kind``."""
  monkeypatch.setitem(
    engines.ENGINES, ("lstm", name), engines.Engine(f"tests.fake_engines.{kind}", ("cpu", "gpu"), kind)
  )


@pytest.fixture(autouse=True)
def fresh_cache():
  auto_check.verified_engine.cache_clear()
  yield
  auto_check.verified_engine.cache_clear()


def test_every_way_of_failing_falls_back_with_one_line(monkeypatch, capsys):
  """Raising, dying of a signal, differing: each is a reason, and the check goes on to the next one;
  the choice is cached."""
  candidates = tuple(_candidate(kind) for kind in ("raising", "killed", "wrong", "right"))
  for _ in range(2):  # the second call is answered from the cache: no second line
    assert auto_check.verified_engine(candidates, HIDDEN, "float32") == "right"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> right" in line
  assert "raising: it raised RuntimeError: kernel crashed" in line
  assert "killed: its check process died of SIGSEGV" in line
  assert "wrong: its outputs or gradients differ from fused" in line


def test_an_engine_with_a_final_state_path_is_checked_on_it_too(capsys):
  """A classifier trains and evaluates through ``return_sequences=False``: an engine whose entry says it
  has that path is checked on it, and one wrong only there falls back."""
  assert auto_check.mismatch("tests.fake_engines.wrong_final", None, HIDDEN) is None
  assert "differ from fused" in auto_check.mismatch(
    "tests.fake_engines.wrong_final", None, HIDDEN, final_state=True
  )
  candidate = auto_check.Candidate("wrong_final", "tests.fake_engines.wrong_final", None, final_state=True)
  assert auto_check.verified_engine((candidate,), HIDDEN, "float32") == "fused"
  assert "wrong_final: its outputs or gradients differ" in capsys.readouterr().err


def test_a_hanging_engine_is_given_up_at_the_timeout(monkeypatch, capsys):
  monkeypatch.setattr(auto_check, "TIMEOUT_S", 5)
  assert auto_check.verified_engine((_candidate("hanging"),), HIDDEN, "float32") == "fused"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> fused" in line and "hanging: its check did not finish within 5 s" in line


def test_all_failing_ends_at_fused_saying_it_computes_float32(capsys):
  assert auto_check.verified_engine((_candidate("wrong"),), HIDDEN, "bfloat16") == "fused"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> fused" in line and "wrong: its outputs" in line and "fused computes float32" in line


def test_off_a_gpu_nothing_is_checked(capsys):
  assert engines.checked_on_gpu("cpu_kernel", LSTM_CELL, HIDDEN, "float32") == "cpu_kernel"
  assert capsys.readouterr().err == ""


def test_api_auto_on_a_gpu_runs_the_check_and_falls_back(monkeypatch, capsys):
  """Through `api.lstm(engine="auto")` on a (faked) GPU: a wrong mosaic gives way to pallas."""
  _register(monkeypatch, "mosaic", "wrong")
  _register(monkeypatch, "pallas", "right")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  params = api.init_params(jax.random.key(0), 4, HIDDEN)
  xs = jax.random.normal(jax.random.key(1), (2, 3, 4))
  outputs, _ = jax.jit(lambda p, x: api.lstm(p, x, engine="auto"))(params, xs)
  expected, _ = scan.lstm(params, xs, *api_defaults(params, xs))
  assert jax.numpy.allclose(outputs, expected, atol=1e-5)
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> pallas" in line and "mosaic: its outputs or gradients differ" in line


def test_the_child_is_a_module_of_its_own():
  """The check's child process imports the engine by module, not through the api (no import circle)."""
  assert "seqclf.rnn.api" not in {
    name for name, value in vars(auto_check).items() if isinstance(value, types.ModuleType)
  } and "api" not in vars(auto_check)
  assert sys.modules["seqclf.rnn.engines.auto_check"] is auto_check


def api_defaults(params, xs):
  """The engine-signature arguments `api.lstm` fills in when none are given."""
  batch, steps, input_size = xs.shape
  hidden = params["recurrent_kernel"].shape[0]
  ones = jax.numpy.ones
  return (
    jax.numpy.zeros((batch, hidden)),
    jax.numpy.zeros((batch, hidden)),
    ones((batch, steps), bool),
    ones((batch, input_size)),
    ones((batch, hidden)),
  )

"""`auto` on a GPU checks its kernel engine against fused first and falls back, saying why.

On CPU the GPU path is exercised with fake engines registered in `api.ENGINES` (a wrong one, a raising
one, a correct one) and a faked default backend, so the real equality check runs end to end.
"""

import sys
import types

import jax
import pytest

from seqclf.lstm import api, auto_check, fused, scan

HIDDEN = 7


def _register(monkeypatch, name, lstm, platforms=("cpu", "gpu")):
  """Puts an engine ``name`` running ``lstm`` into `api.ENGINES` (and its module into sys.modules)."""
  module = types.ModuleType(f"fake_engine_{name}")
  module.lstm = lstm
  monkeypatch.setitem(sys.modules, module.__name__, module)
  monkeypatch.setitem(api.ENGINES, name, api.Engine(module.__name__, platforms, f"fake {name}"))


def _wrong(*args):
  outputs, (h, c) = fused.lstm(*args)
  return outputs * 1.01, (h, c)


def _raising(*args):
  raise RuntimeError("kernel crashed on this device")


@pytest.fixture(autouse=True)
def fresh_cache():
  auto_check.verified_engine.cache_clear()
  yield
  auto_check.verified_engine.cache_clear()


def test_a_wrong_engine_falls_back_to_a_correct_one_with_one_line(monkeypatch, capsys):
  _register(monkeypatch, "wrong", _wrong)
  _register(monkeypatch, "right", scan.lstm)
  assert auto_check.verified_engine(("wrong", "right", "fused"), HIDDEN, "float32") == "right"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> right" in line and "wrong: its outputs or gradients differ from fused" in line


def test_a_raising_engine_falls_back_and_all_failing_ends_at_fused(monkeypatch, capsys):
  _register(monkeypatch, "wrong", _wrong)
  _register(monkeypatch, "crashing", _raising)
  assert auto_check.verified_engine(("crashing", "wrong", "fused"), HIDDEN, "float32") == "fused"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> fused" in line and "crashing: it raised RuntimeError: kernel crashed" in line
  assert "wrong: its outputs" in line


def test_a_passing_engine_is_chosen_and_the_result_cached(monkeypatch, capsys):
  _register(monkeypatch, "right", scan.lstm)
  for _ in range(2):
    assert auto_check.verified_engine(("right", "fused"), HIDDEN, "float32") == "right"
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> right" in line and "matches fused" in line


def test_off_a_gpu_nothing_is_checked(capsys):
  assert auto_check.checked("cpu_kernel", platform="cpu", hidden=HIDDEN, matmul_precision="float32") == (
    "cpu_kernel"
  )
  assert capsys.readouterr().err == ""


def test_api_auto_on_a_gpu_runs_the_check_and_falls_back(monkeypatch, capsys):
  """Through `api.lstm(engine="auto")` on a (faked) GPU: a wrong mosaic gives way to pallas."""
  _register(monkeypatch, "mosaic", _wrong)
  _register(monkeypatch, "pallas", scan.lstm)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  params = api.init_params(jax.random.key(0), 4, HIDDEN)
  xs = jax.random.normal(jax.random.key(1), (2, 3, 4))
  outputs, _ = jax.jit(lambda p, x: api.lstm(p, x, engine="auto"))(params, xs)
  expected, _ = scan.lstm(params, xs, *api_defaults(params, xs))
  assert jax.numpy.allclose(outputs, expected, atol=1e-5)
  (line,) = capsys.readouterr().err.splitlines()
  assert "auto -> pallas" in line and "mosaic: its outputs or gradients differ" in line


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

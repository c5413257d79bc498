"""`seqclf/benchmarks/faults.py`: the faults the GPU check's rehearsal injects, by unit name (the rehearsal
itself, `tests/test_gpu_check.py`, shows hang and signal)."""

import pytest

from seqclf.benchmarks import faults
from seqclf.errors import ConfigError


def test_a_planned_unit_raises_and_others_run_on(monkeypatch):
  monkeypatch.setenv(faults.ENV, "mosaic_sweep N=8 float32=raise, lstm_engines fused B2 T3 H4=hang")
  assert faults.planned() == {"mosaic_sweep N=8 float32": "raise", "lstm_engines fused B2 T3 H4": "hang"}
  faults.inject(faults.unit("mosaic_sweep", "N=8", "bfloat16"))  # not planned: nothing happens
  with pytest.raises(RuntimeError, match="injected fault in mosaic_sweep N=8 float32"):
    faults.inject(faults.unit("mosaic_sweep", "N=8", "float32"))


def test_unset_plans_nothing_and_a_bad_plan_is_one_line(monkeypatch):
  monkeypatch.delenv(faults.ENV, raising=False)
  assert faults.planned() == {}
  monkeypatch.setenv(faults.ENV, "mosaic_sweep N=8 float32=explode")
  with pytest.raises(ConfigError, match="is not UNIT=KIND with KIND one of raise, hang, signal"):
    faults.planned()

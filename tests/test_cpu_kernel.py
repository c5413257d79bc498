"""Building and loading the `cpu_kernel` engine's C++ library (its numbers are in test_lstm_api.py)."""

import pytest

from seqclf.errors import ConfigError
from seqclf.lstm import api, cpu_kernel


def test_the_library_is_built_once_and_then_taken_from_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  library = cpu_kernel.build_library()
  assert library.parent == tmp_path / "cpu_kernel" and library.suffix == ".so"
  built_at = library.stat().st_mtime_ns
  assert cpu_kernel.build_library() == library
  assert library.stat().st_mtime_ns == built_at
  assert [p.name for p in library.parent.iterdir()] == [library.name]  # no temporary left behind


def test_no_compiler_is_a_config_error_naming_the_fix(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "no-such-compiler-here")
  with pytest.raises(ConfigError, match="needs a C\\+\\+17 compiler.*engine='fused'"):
    cpu_kernel.build_library()


def test_a_failing_compiler_is_a_config_error_and_leaves_no_file(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "false")  # exists, exits 1
  with pytest.raises(ConfigError, match="could not build its kernel.*exited with 1"):
    cpu_kernel.build_library()
  assert not list((tmp_path / "cpu_kernel").glob("*.so"))


def test_auto_falls_back_to_fused_where_the_kernel_cannot_be_built(monkeypatch):
  monkeypatch.setattr(cpu_kernel, "unavailable_reason", lambda: "no compiler")
  assert api.resolve_engine("auto", "cpu") == "fused"
  assert api.resolve_engine("cpu_kernel", "cpu") == "cpu_kernel"  # asked by name: its own error at build


def test_thread_count_follows_the_environment(monkeypatch):
  monkeypatch.setenv("SEQCLF_LSTM_THREADS", "3")
  assert cpu_kernel.default_num_threads() == 3
  monkeypatch.delenv("SEQCLF_LSTM_THREADS")
  assert cpu_kernel.default_num_threads() >= 1

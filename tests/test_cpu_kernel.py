"""The `cpu_kernel` engine: building and loading its C++ library, and its bfloat16 products (its float32
numbers are in test_lstm_api.py)."""

import concurrent.futures
import fcntl
import logging
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn import engines, init_gru_params, init_params, lstm
from seqclf.rnn.engines import cpu_kernel, scan
from tests import bf16_products

# (batch, steps, input, hidden): 19 = 16 + 3 rows; 40 = 24 + 16 rows, a thread's range of a whole and a
# partial 16-row AMX tile (bf16 products on AMX CPUs)
SHAPES = [(3, 7, 5, 100), (5, 1, 4, 6), (19, 6, 5, 20), (40, 9, 5, 20)]


def _inputs(batch, steps, input_size, hidden, seed=0):
  """Parameters with every gate in play, inputs, a state, a mask with holes and both dropout masks."""
  keys = jax.random.split(jax.random.key(seed), 8)
  params = init_params(keys[0], input_size, hidden)
  params = {k: v + 0.1 * jax.random.normal(keys[1], v.shape) for k, v in params.items()}
  xs = jax.random.normal(keys[2], (batch, steps, input_size))
  state = (jax.random.normal(keys[3], (batch, hidden)), jax.random.normal(keys[4], (batch, hidden)))
  mask = jax.random.bernoulli(keys[5], 0.7, (batch, steps))
  input_mask = jax.random.bernoulli(keys[6], 0.8, (batch, input_size)) / 0.8
  recurrent_mask = jax.random.bernoulli(keys[7], 0.8, (batch, hidden)) / 0.8
  return params, xs, state, mask, input_mask, recurrent_mask


def test_the_library_is_built_once_and_then_taken_from_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  library = cpu_kernel.build_library()
  assert library.parent == tmp_path / "cpu_kernel" and library.suffix == ".so"
  built_at = library.stat().st_mtime_ns
  assert cpu_kernel.build_library() == library
  assert library.stat().st_mtime_ns == built_at
  left = sorted(p.name for p in library.parent.iterdir())
  assert left == sorted([library.name, library.with_suffix(".lock").name])  # no temporary left behind


def test_a_build_is_logged_at_info_naming_the_library_and_a_cached_one_is_not(tmp_path, monkeypatch, caplog):
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(cpu_kernel, "_compiler", lambda: ["true"])  # a build that compiles nothing
  monkeypatch.setattr(cpu_kernel.os, "replace", lambda partial, library: pathlib.Path(library).touch())
  with caplog.at_level(logging.INFO, logger=cpu_kernel.__name__):
    library = cpu_kernel.build_library()
    assert cpu_kernel.build_library() == library
  assert [record.levelno for record in caplog.records] == [logging.INFO]
  assert "cpu_kernel engine's C++ kernel" in caplog.text and str(library) in caplog.text


# A driver's build in a fresh process, the compiler stubbed out as above: absl shows info by default, so
# this holds the drivers' `seqclf.cli.run` to its verbosity.
_DRIVER_BUILD = """
import pathlib
from seqclf import cli
from seqclf.rnn.engines import cpu_kernel
cpu_kernel._compiler = lambda: ["true"]
cpu_kernel.os.replace = lambda partial, library: pathlib.Path(library).touch()
cli.run(lambda argv: print(cpu_kernel.build_library()))
"""


def test_a_driver_that_builds_the_library_says_nothing_on_stderr(tmp_path):
  """The drivers' stderr holds one error line on bad input and nothing else: the build's message is info."""
  result = subprocess.run(
    [sys.executable, "-c", _DRIVER_BUILD],
    env={**os.environ, "SEQCLF_CACHE_DIR": str(tmp_path)},
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0 and result.stderr == "", result.stderr
  assert result.stdout.startswith(str(tmp_path / "cpu_kernel")), result.stdout


def test_a_build_under_way_in_another_process_is_waited_for_and_taken(tmp_path, monkeypatch):
  """Processes started together (test workers, data-parallel ranks) compile the kernel once."""
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(cpu_kernel, "_compiler", lambda: ["true"])
  monkeypatch.setattr(cpu_kernel.os, "replace", lambda partial, library: pathlib.Path(library).touch())
  library = cpu_kernel.build_library()
  library.unlink()

  def no_compile(*args, **kwargs):
    raise AssertionError("compiled although another process built the library")

  monkeypatch.setattr(cpu_kernel.subprocess, "run", no_compile)
  with open(library.with_suffix(".lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the other process's build, under way
    waiting = concurrent.futures.ThreadPoolExecutor(1).submit(cpu_kernel.build_library)
    time.sleep(0.2)
    assert not waiting.done()  # it waits for the lock
    library.touch()  # the other build's result
  assert waiting.result(timeout=30) == library


def test_an_edit_to_any_source_file_rebuilds(tmp_path, monkeypatch):
  """The cache key covers every file of the kernel's source folder, not only the one compiled."""
  sources = tmp_path / "src"
  sources.mkdir()
  for path in cpu_kernel.SOURCES.iterdir():
    (sources / path.name).write_text(path.read_text())
  monkeypatch.setattr(cpu_kernel, "SOURCES", sources)
  monkeypatch.setattr(cpu_kernel, "MAIN", sources / cpu_kernel.MAIN.name)
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(cpu_kernel, "_compiler", lambda: ["true"])  # the key is what is tested, not g++
  monkeypatch.setattr(cpu_kernel.os, "replace", lambda partial, library: pathlib.Path(library).touch())
  first = cpu_kernel.build_library()
  assert sorted(p.name for p in sources.iterdir()) == [
    "common.h",
    "cpu_kernel.cc",
    "gru.h",
    "lstm.h",
    "products.h",
  ]
  (sources / "gru.h").write_text((sources / "gru.h").read_text() + "\n")
  assert cpu_kernel.build_library() != first


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
  assert engines.check_engine("auto", "cpu", cell="lstm") == "fused"
  assert (
    engines.check_engine("cpu_kernel", "cpu", cell="lstm") == "cpu_kernel"
  )  # asked by name: its own error at build


def test_thread_count_follows_the_environment(monkeypatch):
  monkeypatch.setenv("SEQCLF_LSTM_THREADS", "3")
  assert cpu_kernel.default_num_threads() == 3
  monkeypatch.delenv("SEQCLF_LSTM_THREADS")
  assert cpu_kernel.default_num_threads() >= 1


def _bits_per_thread_count(make_engine, init, cell_state, matmul_precision):
  """Outputs and every gradient, per thread count, of a call on a masked, dropped-out batch of 40 rows:
  gradient blocks of 8 rows (float32) or 16, 16 and 8 (bfloat16), forward ranges of 24 and 16 rows on 2
  threads and 16, 16 and 8 on 3."""
  keys = jax.random.split(jax.random.key(1), 7)
  batch, steps, input_size, hidden = 40, 9, 5, 20
  params = init(keys[0], input_size, hidden)
  params = {k: v + 0.1 * jax.random.normal(keys[1], v.shape) for k, v in params.items()}
  xs = jax.random.normal(keys[2], (batch, steps, input_size))
  state = tuple(jax.random.normal(k, (batch, hidden)) for k in jax.random.split(keys[3], cell_state))
  mask = jax.random.bernoulli(keys[4], 0.7, (batch, steps))
  input_mask = jax.random.bernoulli(keys[5], 0.8, (batch, input_size)) / 0.8
  recurrent_mask = jax.random.bernoulli(keys[6], 0.8, (batch, hidden)) / 0.8
  results = {}
  for threads in (1, 2, 3):
    engine = make_engine(num_threads=threads, matmul_precision=matmul_precision)

    def loss(params, xs, state, engine=engine):
      hs, last = engine(params, xs, *state, mask, input_mask, recurrent_mask)
      return jnp.sum(hs * jnp.cos(hs)) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(last)), (hs, last)

    grads, outputs = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, state)
    results[threads] = [np.asarray(leaf) for leaf in jax.tree.leaves((outputs, grads))]
  return results


@pytest.mark.parametrize("matmul_precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_outputs_and_gradients_are_the_same_bits_on_any_thread_count(cell, matmul_precision):
  """A seed's training run is the same on any machine with the same instruction set: the weight and bias
  gradients are summed per fixed block of rows and the blocks added in order, whatever the thread count."""
  if matmul_precision == "bfloat16":
    _skip_without_bf16()
  make_engine, init, state = {
    "lstm": (cpu_kernel.make_lstm, init_params, 2),
    "gru": (cpu_kernel.make_gru, init_gru_params, 1),
  }[cell]
  results = _bits_per_thread_count(make_engine, init, state, matmul_precision)
  for threads in (2, 3):
    for one, other in zip(results[1], results[threads], strict=True):
      np.testing.assert_array_equal(other, one, err_msg=f"{threads} threads")


# bfloat16 products: the kernel rounds the operands of each step's products (the recurrent ones forward and
# backward, and the weight gradient's) to bfloat16 and sums in float32. This reference does the same in
# plain JAX.
_bf16_product = bf16_products.product(weight_gradient="bfloat16")


def _bf16_reference(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask):
  weights = jnp.concatenate([params["kernel"], params["recurrent_kernel"]])

  def step(carry, inputs):
    h, c = carry
    x_t, keep = inputs
    row = jnp.concatenate([x_t * input_dropout_mask, h * recurrent_dropout_mask], axis=-1)
    i, f, g, o = jnp.split(_bf16_product(row, weights) + params["bias"], 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
    h_new, c_new = jnp.where(keep[:, None], h_new, h), jnp.where(keep[:, None], c_new, c)
    return (h_new, c_new), h_new

  (h, c), hs = jax.lax.scan(step, (h0, c0), (jnp.swapaxes(xs, 0, 1), jnp.swapaxes(step_mask, 0, 1)))
  return jnp.swapaxes(hs, 0, 1), (h, c)


def _bf16_kernel(*args):
  return cpu_kernel.lstm(*args, matmul_precision="bfloat16")


def _outputs_and_grads(engine, params, xs, state, mask, input_mask, recurrent_mask):
  def loss(params, xs, h0, c0):
    outputs, (h, c) = engine(params, xs, h0, c0, mask, input_mask, recurrent_mask)
    return jnp.sum(outputs * jnp.linspace(-1.0, 2.0, outputs.shape[-1])) + jnp.sum(h**2) + jnp.sum(jnp.sin(c))

  return engine(params, xs, *state, mask, input_mask, recurrent_mask), jax.grad(loss, argnums=(0, 1, 2, 3))(
    params, xs, *state
  )


def _assert_within(actual, expected, outputs_atol, grads_fraction):
  """Outputs within ``outputs_atol``; each gradient within ``grads_fraction`` of its largest entry."""
  (outputs, grads), (expected_outputs, expected_grads) = actual, expected
  for a, e in zip(jax.tree.leaves(outputs), jax.tree.leaves(expected_outputs)):
    np.testing.assert_allclose(a, e, rtol=0, atol=outputs_atol)
  for a, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(a, e, rtol=0, atol=grads_fraction * float(np.abs(e).max()))


def _skip_without_bf16():
  if not cpu_kernel.has_bf16_products():
    pytest.skip("this CPU has no AVX512-BF16")


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_products_round_like_the_reference_and_stay_near_float32(shape):
  """Against the reference that rounds like the kernel: equal up to float32 summation order (which can
  flip an occasional bf16 rounding of h, hence 1e-4, well under bfloat16's ~4e-3 steps). Against float32
  `scan`: the documented looser tolerance, outputs within 2e-2, gradients within 0.1 of their largest
  entry."""
  _skip_without_bf16()
  params, xs, state, mask, input_mask, recurrent_mask = _inputs(*shape)
  args = (params, xs, state, mask, input_mask, recurrent_mask)
  actual = _outputs_and_grads(_bf16_kernel, *args)
  reference = _outputs_and_grads(_bf16_reference, *args)
  _assert_within(actual, reference, outputs_atol=1e-4, grads_fraction=1e-3)
  # The weight gradient is a bf16 product too: within 1e-4 of its largest entry here (~1e-7 measured),
  # where a float32 product of the same dz would be 1e-3 to 6e-3 away.
  for name in ("kernel", "recurrent_kernel"):
    expected = reference[1][0][name]
    np.testing.assert_allclose(
      actual[1][0][name], expected, rtol=0, atol=1e-4 * float(np.abs(expected).max())
    )
  _assert_within(actual, _outputs_and_grads(scan.lstm, *args), outputs_atol=2e-2, grads_fraction=0.1)
  float32 = _outputs_and_grads(cpu_kernel.lstm, *args)
  assert not np.allclose(actual[0][0], float32[0][0], rtol=0, atol=1e-5)  # the products really are bf16


# Run in a fresh process (one library per process registers the FFI targets): the kernel built without
# AMX, its bf16 products on vdpbf16ps, held to the reference as above.
_WITHOUT_AMX = """
from seqclf.rnn.engines import cpu_kernel
cpu_kernel.CXXFLAGS = cpu_kernel.CXXFLAGS + ("-mno-amx-tile", "-mno-amx-bf16")
assert not cpu_kernel.bf16_on_amx()
from tests import test_cpu_kernel
for shape in test_cpu_kernel.SHAPES:
  test_cpu_kernel.test_bf16_products_round_like_the_reference_and_stay_near_float32(shape)
"""


@pytest.mark.slow
def test_bf16_without_amx_rounds_like_the_reference_too(tmp_path):
  """Where AMX runs the bf16 products here, the other path (vdpbf16ps, the one CPUs without AMX take) is
  built and tested too; where it does not, the tests above already ran that path. Marked ``slow``: it
  compiles the C++ library a second time (about a minute on 2 cores), and the path is C++ of its own, the
  same with every jax, so CI runs it on the default stack only."""
  _skip_without_bf16()
  if not cpu_kernel.bf16_on_amx():
    pytest.skip("the bf16 products here already run on vdpbf16ps")
  result = subprocess.run(
    [sys.executable, "-c", _WITHOUT_AMX],
    cwd=pathlib.Path(__file__).resolve().parents[1],
    env={**os.environ, "SEQCLF_CACHE_DIR": str(tmp_path)},
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]


def test_bf16_through_the_public_lstm_and_its_refusals(monkeypatch):
  params, xs, *_ = _inputs(3, 4, 5, 6)
  with pytest.raises(ConfigError, match="has no matmul_precision='tensorfloat32'"):
    lstm(params, xs, engine="cpu_kernel", matmul_precision="tensorfloat32")
  if cpu_kernel.has_bf16_products():
    outputs, _ = lstm(params, xs, engine="cpu_kernel", matmul_precision="bfloat16")
    np.testing.assert_allclose(outputs, lstm(params, xs, engine="scan")[0], atol=2e-2)
  monkeypatch.setattr(cpu_kernel, "has_bf16_products", lambda: False)
  with pytest.raises(
    ConfigError, match="AVX512-BF16 instructions, which this CPU lacks; use matmul_precision"
  ):
    cpu_kernel.make_lstm(matmul_precision="bfloat16")

"""Data parallel training: N devices and N processes follow the 1-device run (issue: global batch)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from seqclf import parallel
from seqclf.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _worker(*args, devices=1):
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
  }
  return subprocess.Popen(
    [sys.executable, "-m", "tests.parallel_worker", *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _result(proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  return json.loads(out.strip().splitlines()[-1])


def _assert_same_training(a, b):
  for leaf_a, leaf_b in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
    np.testing.assert_allclose(leaf_a, leaf_b, rtol=2e-4, atol=2e-5)
  for epoch_a, epoch_b in zip(a["epochs"], b["epochs"]):
    for key in ("train_loss", "test_loss", "test_acc"):
      assert epoch_a[key] == pytest.approx(epoch_b[key], abs=2e-4), key


@pytest.fixture(scope="module")
def one_device():
  return _result(_worker(devices=1))


def test_four_devices_train_like_one(one_device):
  four = _result(_worker(devices=4))
  assert four["devices"] == 4 and one_device["devices"] == 1
  _assert_same_training(one_device, four)


def test_device_resident_epochs_on_four_devices_train_like_one():
  # Device-resident epochs shuffle on device (another order than the host's), so compare like with like.
  one, four = _result(_worker("--resident", devices=1)), _result(_worker("--resident", devices=4))
  assert four["devices"] == 4
  _assert_same_training(one, four)


def test_two_processes_on_localhost_train_the_same_parameters(one_device):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [
    _worker("--num_processes=2", f"--process_id={i}", f"--coordinator=127.0.0.1:{port}") for i in range(2)
  ]
  first, second = [_result(p) for p in procs]
  assert first["process_count"] == 2 and first["devices"] == 2
  assert first["params"] == second["params"]  # one program, bit-identical on both processes
  _assert_same_training(one_device, first)


def test_batch_size_must_divide_over_devices():
  four_devices = types.SimpleNamespace(devices=np.empty(4))  # check_batch_size reads only the count
  parallel.check_batch_size(12, four_devices)
  with pytest.raises(ConfigError, match="batch_size=10 does not divide over 4 devices"):
    parallel.check_batch_size(10, four_devices)


def test_distributed_flags_are_checked():
  with pytest.raises(ConfigError, match="process_id"):
    parallel.initialize_distributed("127.0.0.1:1", 2, 5)
  with pytest.raises(ConfigError, match="coordinator"):
    parallel.initialize_distributed("", 2, 0)
  with pytest.raises(ConfigError, match="--num_processes must be at least 1"):
    parallel.initialize_distributed("", 0, 0)
  with pytest.raises(ConfigError, match=r"--process_id must be in \[0, 1\)"):
    parallel.initialize_distributed("", 1, 5)
  parallel.initialize_distributed("", 1, 0)  # a single process needs nothing

"""Platform presets: what "auto" resolves to, and that cpu_heap really stops the per-step page faults."""

import os
import subprocess
import sys
import textwrap

import pytest

from seqclf import presets
from seqclf.errors import ConfigError

# Runs a jitted function whose temporaries (a few 32 MiB blocks) XLA allocates at every call, and prints
# the minor page faults per call over 40 calls after 20 warm-up calls. With cpu_heap the heap first grows
# to a plateau (glibc cannot always reuse a freed block for the next aligned request of the same size, so
# it takes a few blocks' worth more from the system; measured: at most 8 blocks, reached within 60 calls),
# after which the calls fault no more.
FAULTS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from seqclf import presets
    print(presets.apply(sys.argv[1]), file=sys.stderr)
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: jnp.sum(jnp.sin(x)[::-1] * jnp.cos(x)) + jnp.sum(jnp.tanh(x) @ x[:64].T))
    x = jnp.ones((8 * 1024 * 1024 // 64, 64))
    for _ in range(20):
      f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
      f(x).block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 40)
""")


def _faults_per_call(preset: str) -> int:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(
    [sys.executable, "-c", FAULTS_SCRIPT, preset], capture_output=True, text=True, env=env, check=True
  )
  return int(result.stdout.strip())


def test_cpu_heap_keeps_xla_temporaries_mapped():
  without, with_preset = _faults_per_call("none"), _faults_per_call("cpu_heap")
  assert without > 4000  # every call maps its 32 MiB temporaries afresh (8192 pages each)
  assert with_preset < without / 4


def test_auto_is_cpu_heap_without_an_accelerator_plugin_or_with_the_cpu_pinned(monkeypatch):
  monkeypatch.setattr(presets.importlib.util, "find_spec", lambda name: None)
  assert presets.resolve("auto", environ={}) == "cpu_heap"
  monkeypatch.setattr(presets.importlib.util, "find_spec", lambda name: object())
  assert presets.resolve("auto", environ={}) == "none"
  assert presets.resolve("auto", environ={"JAX_PLATFORMS": "cpu"}) == "cpu_heap"
  assert presets.resolve("gpu_graphs", environ={}) == "gpu_graphs"


def test_gpu_graphs_adds_its_xla_flag_and_unknown_presets_are_refused():
  environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert presets.apply("gpu_graphs", environ) == "gpu_graphs"
  assert environ["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x --xla_gpu_enable_command_buffer=")
  with pytest.raises(ConfigError, match="unknown preset 'fast'"):
    presets.apply("fast", {})

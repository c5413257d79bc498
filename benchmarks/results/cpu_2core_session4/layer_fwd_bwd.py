"""The cpu_kernel layer's fwd+bwd time in JAX: python layer_fwd_bwd.py B,T,E,H CALLS (mean ms of CALLS calls)."""

# ruff: noqa: E402  (the heap preset must be applied before JAX is imported)
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository
from seqclf import presets

presets.apply("cpu_heap")
import jax
import jax.numpy as jnp

from seqclf.lstm import cpu_kernel, init_params

B, T, E, H = [int(v) for v in sys.argv[1].split(",")]
n = int(sys.argv[2])
params = init_params(jax.random.key(0), E, H)
xs = jax.random.normal(jax.random.key(1), (B, T, E))
h0 = jnp.zeros((B, H))
oe = jnp.ones((B, E))
oh = jnp.ones((B, H))
full = jnp.ones((B, T), bool)
f = lambda p, x: cpu_kernel.lstm(p, x, h0, h0, full, oe, oh)
g = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x)[0] * 0.01), argnums=(0, 1)))
jax.block_until_ready(g(params, xs))
t = time.perf_counter()
for _ in range(n):
  jax.block_until_ready(g(params, xs))
print("fwd+bwd ms", (time.perf_counter() - t) / n * 1e3)

"""Kernel fwd+bwd, fp32 vs bf16 (and masked with bucket-like lengths), alternated in one process."""
# ruff: noqa: E402  (the heap preset must be applied before JAX is imported)

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # the repository
from seqclf import presets

presets.apply("cpu_heap")
import jax
import jax.numpy as jnp
import numpy as np

from seqclf.lstm import cpu_kernel, init_params

B, T, E, H = [int(v) for v in sys.argv[1].split(",")]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
params = init_params(jax.random.key(0), E, H)
xs = jax.random.normal(jax.random.key(1), (B, T, E))
h0 = jnp.zeros((B, H))
ones_e = jnp.ones((B, E))
ones_h = jnp.ones((B, H))
full = jnp.ones((B, T), bool)
lengths = jax.random.randint(jax.random.key(2), (B,), T // 2, T + 1)
half = jnp.arange(T)[None] < lengths[:, None]


def make(prec, mask, grad):
  f = lambda p, x: cpu_kernel.lstm(p, x, h0, h0, mask, ones_e, ones_h, matmul_precision=prec)
  if grad:
    return jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x)[0] * 0.01), argnums=(0, 1)))
  return jax.jit(lambda p, x: f(p, x)[0])


cases = {
  f"{prec} {'fwd+bwd' if g else 'fwd'} {mname}": make(prec, m, g)
  for prec in ("float32", "bfloat16")
  for g in (False, True)
  for mname, m in (("full", full), ("lengths U[T/2,T]", half))
}
for fn in cases.values():
  jax.block_until_ready(fn(params, xs))
times = {k: [] for k in cases}
for _repeat in range(reps):
  for k, fn in cases.items():
    t = time.perf_counter()
    jax.block_until_ready(fn(params, xs))
    times[k].append(time.perf_counter() - t)
flops = 2 * B * T * (E + H) * 4 * H
for k, v in times.items():
  v = np.array(v) * 1e3
  mult = 3 if "bwd" in k else 1
  print(
    f"B={B} T={T} E={E} H={H} {k:32s} median {np.median(v):7.1f} ms [{v.min():.1f}..{v.max():.1f}]  {mult * flops / np.median(v) / 1e6:.0f} GFLOP/s (full-length count)"
  )
print("real/full steps", float(half.mean()))

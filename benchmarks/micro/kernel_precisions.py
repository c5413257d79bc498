"""The `cpu_kernel` layer's forward and forward+backward time, float32 against bfloat16 products, full
length and with lengths drawn from U[T/2, T], the cases alternated in one process.

  python benchmarks/micro/kernel_precisions.py --shape=64,500,32,100 --repeats=5   # the article LSTM

Prints per case the median and range of ``--repeats`` timed calls (compiled first, each call blocked on)
and the matmul GFLOP/s counted over every padded step.
"""

import argparse
import time

from seqclf import presets

presets.apply("cpu_heap")  # before JAX starts its backend, as the drivers' default preset on a CPU

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from seqclf.rnn import init_params  # noqa: E402
from seqclf.rnn.engines import cpu_kernel  # noqa: E402


def cases(batch: int, steps: int, inputs: int, hidden: int):
  """{case name: (jitted function, its arguments)}."""
  params = init_params(jax.random.key(0), inputs, hidden)
  xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))
  h0, ones_e, ones_h = jnp.zeros((batch, hidden)), jnp.ones((batch, inputs)), jnp.ones((batch, hidden))
  lengths = jax.random.randint(jax.random.key(2), (batch,), steps // 2, steps + 1)
  masks = {
    "full": jnp.ones((batch, steps), bool),
    "lengths U[T/2,T]": jnp.arange(steps)[None] < lengths[:, None],
  }

  def make(precision, mask, grad):
    def forward(p, x):
      return cpu_kernel.lstm(p, x, h0, h0, mask, ones_e, ones_h, matmul_precision=precision)[0]

    if grad:
      return jax.jit(jax.grad(lambda p, x: jnp.sum(forward(p, x) * 0.01), argnums=(0, 1)))
    return jax.jit(forward)

  return {
    f"{precision} {'fwd+bwd' if grad else 'fwd'} {name}": (make(precision, mask, grad), (params, xs))
    for precision in ("float32", "bfloat16")
    for grad in (False, True)
    for name, mask in masks.items()
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shape", default="64,500,32,100", help="B,T,E,H")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  batch, steps, inputs, hidden = (int(v) for v in args.shape.split(","))
  timed = cases(batch, steps, inputs, hidden)
  for function, arguments in timed.values():
    jax.block_until_ready(function(*arguments))
  times = {name: [] for name in timed}
  for _ in range(args.repeats):
    for name, (function, arguments) in timed.items():
      start = time.perf_counter()
      jax.block_until_ready(function(*arguments))
      times[name].append(time.perf_counter() - start)
  flops = 2 * batch * steps * (inputs + hidden) * 4 * hidden
  for name, seconds in times.items():
    ms = np.array(seconds) * 1e3
    count = 3 * flops if "bwd" in name else flops
    print(
      f"B={batch} T={steps} E={inputs} H={hidden} {name:32s} median {np.median(ms):7.1f} ms"
      f" [{ms.min():.1f}..{ms.max():.1f}]  {count / np.median(ms) / 1e6:.0f} GFLOP/s"
    )


if __name__ == "__main__":
  main()

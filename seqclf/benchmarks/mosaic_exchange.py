r"""The `mosaic` engine's exchange alone on a GPU: µs per step of the N-CTA all-gather, per call pattern.

  python -m seqclf.benchmarks.mosaic_exchange                 # N = 8, T = 500, float32 and bfloat16
  python -m seqclf.benchmarks.mosaic_exchange --steps=2000 --repeats=10

Runs `seqclf.rnn.engines.mosaic_exchange.exchange` for each precision and call pattern (float32's two
bf16 pieces: "per_piece", two store calls per target, as the forward sent before; "per_target", the
kernel's one; bfloat16 has one piece, so one pattern), checks every CTA's buffer after the last step,
and writes ``WORKDIR/mosaic_exchange.json`` and ``.md`` after each pattern: µs per step beside the
range (low-high) of the forward's exchange term of `seqclf.rnn.engines.mosaic_cost` (docs/kernels.md). A pattern that fails is a
row with its error and a line on stderr starting ``ERROR``. Off a GPU the kernels are lowered for CUDA
only (the interpreter has no remote stores): each row says so.
"""

import os
import sys

import jax
import numpy as np
from absl import flags

from seqclf import cli, lowering, results, timing
from seqclf.benchmarks import faults
from seqclf.benchmarks.mosaic_report import EXCHANGE_HEADER, exchange_result
from seqclf.errors import ConfigError
from seqclf.rnn.engines import mosaic_exchange, mosaic_gpu

_CLUSTER_SIZE = flags.DEFINE_integer(
  "cluster_size", mosaic_gpu.DEFAULT_CLUSTER_SIZE, "CTAs in the cluster, N."
)
_PRECISIONS = flags.DEFINE_list("precisions", ["float32", "bfloat16"], "matmul_precision values.")
_STEPS = flags.DEFINE_integer("steps", 500, "Exchange steps per call, T.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per pattern.", lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", "runs/mosaic_exchange", "Where mosaic_exchange.json goes.")


def cases(precisions) -> list[tuple[str, str]]:
  """(precision, pattern) pairs, each distinct call count once: bfloat16's one piece makes both patterns
  one call per target."""
  pairs = []
  for precision in precisions:
    if precision not in mosaic_gpu.MATMUL_PRECISIONS:
      raise ConfigError(
        f"unknown --precisions value {precision!r}; choose from {', '.join(mosaic_gpu.MATMUL_PRECISIONS)}"
      )
    pieces = mosaic_gpu._PIECES[precision]
    patterns = mosaic_exchange.PATTERNS if pieces > 1 else ("per_target",)
    pairs += [(precision, pattern) for pattern in patterns]
  return pairs


def main(argv):
  cli.require_no_arguments(argv)
  reason = mosaic_gpu.unavailable_reason()
  if reason is not None:
    raise ConfigError(reason)
  n, steps = _CLUSTER_SIZE.value, _STEPS.value
  gpu = jax.default_backend() == "gpu"
  names = ("cluster_size", "precisions", "steps", "repeats")
  meta = results.collect_meta(flags={name: flags.FLAGS[name].value for name in names})
  path = os.path.join(_WORKDIR.value, "mosaic_exchange.json")
  runs, rows = [], []
  slices = mosaic_exchange.exchange_inputs(n)
  for precision, pattern in cases(_PRECISIONS.value):
    pieces = mosaic_gpu._PIECES[precision]
    shape = {
      "cluster_size": n,
      "matmul_precision": precision,
      "pattern": pattern,
      "steps": steps,
      "calls_per_step": mosaic_exchange.calls_per_step(pattern, n, pieces),
    }
    unit = faults.unit("mosaic_exchange", f"N={n}", precision, pattern)
    try:
      faults.inject(unit)
      function = jax.jit(mosaic_exchange.exchange(n, pieces, steps, pattern))
      if gpu:
        compiled, compile_s = timing.compile_seconds(function, slices)
        stats = timing.steady_state(compiled, slices, repeats=_REPEATS.value)
        expected = mosaic_exchange.exchange_expected(slices, pieces, steps)
        np.testing.assert_array_equal(np.asarray(compiled(slices), np.float32), expected.astype(np.float32))
        run, row = exchange_result(shape, {**stats, "compile_s": compile_s})
      else:
        lowering.lower(function, slices, platform="gpu")
        note = f"lowered for CUDA, not run: {mosaic_exchange.INTERPRETER_REASON}"
        run, row = exchange_result(shape, None, note)
    except Exception as error:  # a failing pattern is a result too; the others still run
      message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
      run, row = exchange_result(shape, None, message)
      run["error"] = message
      print(f"ERROR {unit}: {message}", file=sys.stderr, flush=True)
    runs.append(run)
    rows.append(row)
    print(results.markdown_table(EXCHANGE_HEADER, [row]), flush=True)
    results.write_json_atomic(
      path, {"schema_version": results.SCHEMA_VERSION, "kind": "mosaic_exchange", "meta": meta, "runs": runs}
    )
    results.write_text_atomic(
      os.path.join(_WORKDIR.value, "mosaic_exchange.md"), results.markdown_table(EXCHANGE_HEADER, rows)
    )
  print(f"wrote {path}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

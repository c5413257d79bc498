r"""LSTM engine sweep: forward and forward+backward time per engine and shape, against `scan`.

  python -m seqclf.benchmarks.lstm_engines --batch_sizes=64 --steps=500 --hidden_sizes=100 --peers=torch
  python -m seqclf.benchmarks.lstm_engines          # the full sweep B {16,64,256} x T {100,500} x H {100,256,512}
  python -m seqclf.benchmarks.lstm_engines --cells=lstm,gru --batch_sizes=64 --steps=500 --hidden_sizes=100

``--cells`` sweeps the GRU's engines (`seqclf.rnn.engines.engines_of`) too; a GRU row's engine reads
``gru/<engine>``, its ratio is against the GRU's own `scan` and its FLOPs are 2·B·T·(E+H)·3H.

Engines are seqclf.rnn's (``flax``, Flax's own nn.RNN(OptimizedLSTMCell), among them: the baseline, as in
the article driver); peers are other frameworks (``torch``), timed in the same process.

Reports ms per call, achieved TFLOP/s (matmul FLOPs of the LSTM: 2·B·T·(E+H)·4H forward, three times that
for forward+backward) and speed-up against `scan` measured in the same process, and writes
``WORKDIR/lstm_engines.json`` and ``.md`` after every shape. An engine that refuses a shape or fails on it
is a row with the reason (and a line starting ``ERROR``), and the sweep goes on; a sweep that timed
nothing ends with one ``error:`` line and exit code 2. Pallas runs only on GPU here: its CPU interpret mode is for tests.
"""

import os

import jax
import jax.numpy as jnp
from absl import flags

from seqclf import cli, memory, optional, presets, profiling, results, timing
from seqclf.benchmarks import faults
from seqclf.errors import ConfigError
from seqclf.rnn import CELLS, init_cell_params, rnn
from seqclf.rnn.engines import engines_of, unavailable_reason

presets.define_flags()
profiling.define_flags()
_ENGINES = flags.DEFINE_list("engines", None, "Engines to time (default: all that run natively here).")
_BATCH_SIZES = cli.define_positive_int_list("batch_sizes", [16, 64, 256], "Batch sizes B.")
_STEPS = cli.define_positive_int_list("steps", [100, 500], "Sequence lengths T.")
_HIDDEN_SIZES = cli.define_positive_int_list("hidden_sizes", [100, 256, 512], "Hidden sizes H.")
_INPUT_SIZE = flags.DEFINE_integer("input_size", 32, "Input (embedding) size E.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
  "repeats", 5, "Timed repeats per measurement (median and spread).", lower_bound=1
)
_PEERS = flags.DEFINE_list(
  "peers",
  [],
  "Other frameworks to time in the same process: torch (nn.LSTM; cuDNN on GPU).",
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/lstm_engines", "Where lstm_engines.json goes.")
_CELLS = flags.DEFINE_list("cells", ["lstm"], f"Cells whose engines to sweep: {', '.join(CELLS)}.")


def final_h(cell: str, params, xs, engine: str):
  """The final h of ``cell``'s layer over ``xs`` (its state's first part)."""
  state = rnn(CELLS[cell], params, xs, engine=engine)[1]
  return state[0] if isinstance(state, tuple) else state


# GPU kernel engines that run elsewhere only in an interpreter.
INTERPRETED_OFF_GPU = ("pallas", "mosaic")


def native_engines(platform: str, cell: str = "lstm") -> list[str]:
  """The engines worth timing here, the ``flax`` baseline among them: Pallas and Mosaic "run" on CPU only in
  interpreters, correctness tools; an engine that cannot build here is skipped."""
  return [
    name
    for name, engine in engines_of(cell).items()
    if platform in engine.platforms
    and not (name in INTERPRETED_OFF_GPU and platform != "gpu")
    and unavailable_reason(name, cell) is None
  ]


def lstm_flops(batch, steps, input_size, hidden, gates: int = 4) -> float:
  return 2.0 * batch * steps * (input_size + hidden) * gates * hidden


def _trace(engine: str, mode: str, batch: int, steps: int, hidden: int):
  """The ``--profile_dir`` trace of one measurement, in a subdirectory of its own."""
  return profiling.from_flags(f"{engine}-{mode}-B{batch}-T{steps}-H{hidden}")


def compile_engine(engine, params, xs, cell: str = "lstm") -> dict:
  """``{mode: (compiled, compile_s)}`` for fwd and fwd_bwd; ``xs`` may be a `jax.ShapeDtypeStruct`."""

  def forward(params, xs):
    return final_h(cell, params, xs, engine)

  def forward_backward(params, xs):
    return jax.grad(lambda p, x: jnp.sum(final_h(cell, p, x, engine)), argnums=(0, 1))(params, xs)

  return {
    mode: timing.compile_seconds(jax.jit(fn), params, xs)
    for mode, fn in (("fwd", forward), ("fwd_bwd", forward_backward))
  }


def time_engine(engine, params, xs, repeats, compiled=None) -> dict:
  """Steady-state stats per mode (and its compile time), compiling unless ``compiled`` is given."""
  out = {}
  for mode, (function, compile_s) in (compiled or compile_engine(engine, params, xs)).items():
    trace = _trace(engine, mode, *xs.shape[:2], params["recurrent_kernel"].shape[0])
    out[mode] = {
      "compile_s": compile_s,
      **timing.steady_state(function, params, xs, repeats=repeats, trace=trace),
    }
  return out


def time_torch(batch, steps, input_size, hidden, repeats, cell: str = "lstm") -> dict:
  import torch  # optional peer

  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_flush_denormal(True)  # as XLA's CPU backend runs; see seqclf/benchmarks/peers/torch_models.py
  layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](input_size, hidden, batch_first=True).to(device)
  xs = torch.randn(batch, steps, input_size, device=device, requires_grad=True)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def final_h():  # nn.LSTM's state is (h, c), nn.GRU's h
    state = layer(xs)[1]
    return state[0] if cell == "lstm" else state

  def forward():
    with torch.no_grad():
      return final_h()

  def forward_backward():
    layer.zero_grad(set_to_none=True)
    final_h().sum().backward()
    return xs.grad

  out = {}
  for mode, fn in (("fwd", forward), ("fwd_bwd", forward_backward)):
    trace = _trace("torch", mode, batch, steps, hidden)  # holds the host side; CUDA kernels need CUPTI
    out[mode] = timing.steady_state(lambda fn=fn: (fn(), sync()), repeats=repeats, trace=trace)
  return out


def main(argv):
  cli.require_no_arguments(argv)
  preset = presets.apply(presets.PRESET.value)  # before anything starts JAX's backends
  platform = jax.default_backend()
  for cell in _CELLS.value:
    if cell not in CELLS:
      raise ConfigError(f"unknown cell {cell!r} in --cells; choose from {', '.join(CELLS)}")
  engines = _ENGINES.value or native_engines(platform)
  for engine in engines:
    if not any(engine in engines_of(cell) for cell in CELLS):
      known = sorted({name for cell in CELLS for name in engines_of(cell)})
      raise ConfigError(f"unknown engine {engine!r}; choose from {', '.join(known)}")
  # Per cell, the asked engines it has (all of them: an LSTM engine without a GRU is left out of the GRU's).
  cell_engines = {
    cell: [e for e in engines if e in engines_of(cell)] if _ENGINES.value else native_engines(platform, cell)
    for cell in _CELLS.value
  }
  interpreted = [engine for engine in engines if engine in INTERPRETED_OFF_GPU and platform != "gpu"]
  if interpreted:  # would time the interpreter, not a kernel
    raise ConfigError(
      f"--engines={interpreted[0]} runs in interpret mode on {platform} (a correctness tool, not a kernel to time); "
      "time it on a GPU"
    )
  for cell, names in cell_engines.items():
    if "scan" not in names:
      cell_engines[cell] = ["scan", *names]  # every ratio is against scan, measured here
  unknown_peers = set(_PEERS.value) - {"torch"}
  if unknown_peers:
    hint = "; flax is an engine: --engines=...,flax" if "flax" in unknown_peers else ""
    raise ConfigError(f"unknown peer(s) {', '.join(sorted(unknown_peers))}; available: torch{hint}")
  if "torch" in _PEERS.value:
    optional.require("torch", "peers", feature="--peers=torch")  # fails now, not after the first shape
  shapes = [
    (cell, b, t, h)
    for cell in _CELLS.value
    for b in _BATCH_SIZES.value
    for t in _STEPS.value
    for h in _HIDDEN_SIZES.value
  ]
  path = os.path.join(_WORKDIR.value, "lstm_engines.json")
  meta = results.collect_meta(
    flags={
      **{
        k: flags.FLAGS[k].value
        for k in (
          "engines",
          "batch_sizes",
          "steps",
          "hidden_sizes",
          "input_size",
          "repeats",
          "peers",
          "cells",
          "profile_dir",
          "profile_steps",
        )
      },
      "preset": preset,
    }
  )
  runs, rows = [], []
  e = _INPUT_SIZE.value
  for cell, b, t, h in shapes:
    shape = {"batch": b, "steps": t, "input_size": e, "hidden": h}
    timings, failures = _time_shape(cell, cell_engines[cell], b, t, e, h)
    flops = lstm_flops(b, t, e, h, CELLS[cell].gates)
    for name, modes in timings.items():
      for mode, stats in modes.items():
        mode_flops = flops * (3 if mode == "fwd_bwd" else 1)
        scan_s = timings["scan"][mode]["median_s"] if "scan" in timings else None
        entry = {
          "engine": name,
          "cell": cell,
          "mode": mode,
          **shape,
          "tflops_per_s": mode_flops / stats["median_s"] / 1e12,
          "speedup_vs_scan": scan_s / stats["median_s"] if scan_s else None,
          **stats,
        }
        runs.append(entry)
        rows.append(
          [
            name if cell == "lstm" else f"{cell}/{name}",
            mode,
            b,
            t,
            h,
            f"{1e3 * stats['median_s']:.2f}",
            f"{1e3 * (stats['max_s'] - stats['min_s']) / 2:.2f}",
            f"{entry['tflops_per_s']:.3f}",
            f"{entry['speedup_vs_scan']:.2f}x" if scan_s else "–",
            f"{stats['compile_s']:.2f}" if "compile_s" in stats else "–",
            "",
          ]
        )
    for name, reason in failures.items():  # a refusal or failure is a row too; the sweep goes on
      runs.append({"engine": name, "cell": cell, **shape, "error": reason})
      rows.append(
        [name if cell == "lstm" else f"{cell}/{name}", "–", b, t, h, "–", "–", "–", "–", "–", reason]
      )
      # On stdout with the table: stderr keeps to the one `error:` line of a sweep that timed nothing.
      print(f"ERROR {faults.unit('lstm_engines', name, f'B{b}', f'T{t}', f'H{h}')}: {reason}")
    print(results.markdown_table(HEADER, rows[-(2 * len(timings) + len(failures)) :]), flush=True)
    # Both files after every shape: a later shape that hangs or kills the process loses only itself.
    results.write_json_atomic(
      path, {"schema_version": results.SCHEMA_VERSION, "kind": "lstm_engines", "meta": meta, "runs": runs}
    )
    results.write_text_atomic(
      os.path.join(_WORKDIR.value, "lstm_engines.md"), results.markdown_table(HEADER, rows)
    )
  print(f"wrote {path}")
  if runs and all("error" in run for run in runs):  # nothing was timed: the request itself is wrong
    raise ConfigError(f"no engine could be timed at any shape; the first: {runs[0]['error']}")


def _reason(error: Exception) -> str:
  """An exception as one short line for a table's error cell."""
  first = str(error).splitlines()[0] if str(error) else ""
  return f"{type(error).__name__}: {first}"[:200]


def _time_shape(cell, engines, b, t, e, h) -> tuple[dict, dict]:
  """({engine or peer: {mode: stats}}, {engine or peer: why it has no timing}) for one cell and shape.

  Each engine is compiled and timed on its own, so one that refuses the shape (say mosaic above
  H = 128) or fails costs only its own rows."""
  params = init_cell_params(CELLS[cell], jax.random.key(0), e, h)
  compiled, failures = {}, {}
  for name in engines:
    try:
      faults.inject(faults.unit("lstm_engines", name, f"B{b}", f"T{t}", f"H{h}"))
      compiled[name] = compile_engine(name, params, jax.ShapeDtypeStruct((b, t, e), jnp.float32), cell)
      # Before the inputs exist: too large for the device is one reason, not an allocation failure.
      memory.check_fits_in_memory(
        [function for function, _ in compiled[name].values()],
        fix="lower --batch_sizes, --steps or --hidden_sizes",
      )
    except Exception as error:
      compiled.pop(name, None)
      failures[name] = _reason(error)
  xs = jax.random.normal(jax.random.key(1), (b, t, e))
  timings = {}
  for name in compiled:
    try:
      timings[name] = time_engine(name, params, xs, _REPEATS.value, compiled[name])
    except Exception as error:
      failures[name] = _reason(error)
  if "torch" in _PEERS.value:
    try:
      timings["torch"] = time_torch(b, t, e, h, _REPEATS.value, cell)
    except Exception as error:
      failures["torch"] = _reason(error)
  return timings, failures


HEADER = ["engine", "mode", "B", "T", "H", "ms", "± ms", "TFLOP/s", "vs scan", "compile s", "error"]


def run():
  cli.run(main)


if __name__ == "__main__":
  run()

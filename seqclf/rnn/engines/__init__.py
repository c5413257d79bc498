"""The engines: one registry keyed by (cell, engine), each entry the engine's capabilities as data.

An engine module exposes one function per cell it implements, named after the cell, with the engine
signature ``<cell>(params, xs, *initial_state, step_mask, input_dropout_mask, recurrent_dropout_mask)``
(``lstm(params, xs, h0, c0, ...) -> (outputs, (h, c))``, ``gru(params, xs, h0, ...) -> (outputs, h)``;
every argument an array, `seqclf.rnn.rnn` fills in the optional ones), plus a keyword for each option its
entry lists (``matmul_precision``, ``recurrent_activation``, ``return_sequences``). `check_engine` is the
one place a call is held against an entry: a request an engine cannot honour is one `ConfigError` line
naming the engines that can, never an argument the engine silently drops.

Engine ``scan`` (`seqclf.rnn.engines.scan`) runs any `seqclf.rnn.cells.Cell` from its step, registered or
not. Adding an engine for a cell: its module and one line in `ENGINES`; adding a cell: a `Cell`, and
entries here for the engines that implement it beyond ``scan``.
"""

import functools
import importlib
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.rnn.cells import CELLS, RECURRENT_ACTIVATIONS, Cell
from seqclf.rnn.engines import auto_check

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
ALL_ACTIVATIONS = tuple(RECURRENT_ACTIVATIONS)


class Engine(NamedTuple):
  """One engine of one cell and its capabilities, which `check_engine` holds every call against."""

  module: str  # module holding the engine-signature function named after the cell
  platforms: tuple[str, ...]  # JAX platforms it runs on
  doc: str
  # Which padding masks it honours: "any" (any [B, T] mask: left or right padding, holes), "lengths"
  # (right padding only, so it takes ``lengths=`` and refuses a ``mask=``, which under jit it could not
  # check), or "none" (it runs every step of every sequence).
  masks: str = "any"
  input_dropout: bool = True  # honours ``input_dropout_mask``
  recurrent_dropout: bool = True  # honours ``recurrent_dropout_mask``
  dtypes: tuple[str, ...] = FLOAT_DTYPES  # the dtypes it computes in (parameters, inputs and state)
  # The ``matmul_precision`` values its function takes as a keyword. Empty: it takes none and its matmuls
  # are float32 products ("float32" is then the one value accepted).
  matmul_precisions: tuple[str, ...] = ()
  # Platforms where it runs only in an interpreter (a GPU kernel on a CPU: correct, and 100-1000x
  # slower): refused there unless $SEQCLF_INTERPRET=1 asks for it (`interpret_requested`).
  interpreted: tuple[str, ...] = ()
  # The ``recurrent_activation`` values (`seqclf.rnn.cells.RECURRENT_ACTIVATIONS`) its function takes as
  # a keyword. Empty: it takes none and its gates are sigmoids ("sigmoid" the one value accepted).
  recurrent_activations: tuple[str, ...] = ()
  # Its function takes ``return_sequences=`` and with False stores no per-step outputs. Without it,
  # ``return_sequences=False`` runs the engine in full and returns its final h as the outputs.
  final_state: bool = False
  # It has forward-mode derivatives (``jax.jvp``, ``jax.jacfwd``): autodiff through plain JAX, not a
  # hand-written VJP.
  forward_mode: bool = False


# The environment variable that lets a GPU kernel engine run in its interpreter where there is no GPU
# (tests, and users who want to step through a kernel): "1" on, anything else off.
INTERPRET_ENV = "SEQCLF_INTERPRET"

# The reference engine, which every cell has (`engines_of`); float64 too where JAX computes it (with
# jax_enable_x64), so it can be held to PyTorch in float64.
SCAN = Engine(
  "seqclf.rnn.engines.scan",
  ("cpu", "gpu", "tpu"),
  "reference lax.scan cell, autodiff",
  dtypes=(*FLOAT_DTYPES, "float64"),
  recurrent_activations=ALL_ACTIVATIONS,
  final_state=True,
  forward_mode=True,
)

ENGINES = {
  ("lstm", "fused"): Engine(
    "seqclf.rnn.engines.fused",
    ("cpu", "gpu", "tpu"),
    "hoisted projections + custom-VJP scan",
    recurrent_activations=ALL_ACTIVATIONS,
    final_state=True,
  ),
  ("lstm", "cpu_kernel"): Engine(
    "seqclf.rnn.engines.cpu_kernel",
    ("cpu",),
    "multithreaded C++ recurrence via XLA FFI",
    dtypes=("float32",),
    matmul_precisions=("float32", "bfloat16"),  # bfloat16: CPUs with AVX512-BF16 only (else ConfigError)
  ),
  ("lstm", "pallas"): Engine(
    "seqclf.rnn.engines.pallas_gpu",
    ("gpu",),
    "one-launch Pallas recurrence kernel",
    matmul_precisions=("float32", "BF16_BF16_F32_X6", "tensorfloat32", "bfloat16"),
    interpreted=("cpu",),
  ),
  ("lstm", "mosaic"): Engine(
    "seqclf.rnn.engines.mosaic_gpu",
    ("gpu",),
    "Hopper Mosaic GPU recurrence on a cluster of SMs (jax >= 0.11)",
    dtypes=("float32",),
    matmul_precisions=("float32", "BF16_BF16_F32_X3", "bfloat16"),  # float32 = X3: three bf16 products
    interpreted=("cpu",),
    final_state=True,
  ),
  ("lstm", "cudnn"): Engine(
    "seqclf.rnn.engines.cudnn",
    ("gpu",),
    "jax.experimental.rnn (cuDNN), opt-in",
    masks="lengths",
    recurrent_dropout=False,
    dtypes=("float32",),
  ),
  ("lstm", "flax"): Engine(
    "seqclf.rnn.engines.flax_rnn",
    ("cpu", "gpu", "tpu"),
    "Flax's nn.RNN(OptimizedLSTMCell): the baseline to beat",
    masks="none",
    input_dropout=False,
    recurrent_dropout=False,
    forward_mode=True,
  ),
  ("gru", "fused"): Engine(
    "seqclf.rnn.engines.fused",
    ("cpu", "gpu", "tpu"),
    "hoisted projections + custom-VJP scan",
    dtypes=(*FLOAT_DTYPES, "float64"),
    recurrent_activations=ALL_ACTIVATIONS,
  ),
  ("gru", "cpu_kernel"): Engine(
    "seqclf.rnn.engines.cpu_kernel",
    ("cpu",),
    "multithreaded C++ recurrence via XLA FFI",
    dtypes=("float32",),
    matmul_precisions=("float32", "bfloat16"),  # bfloat16: CPUs with AVX512-BF16 only (else ConfigError)
  ),
  ("gru", "flax"): Engine(
    "seqclf.rnn.engines.flax_rnn",
    ("cpu", "gpu", "tpu"),
    "Flax's nn.RNN(GRUCell): the baseline to beat",
    masks="none",
    input_dropout=False,
    recurrent_dropout=False,
    forward_mode=True,
  ),
}

# What "auto" picks per cell and platform: the first engine of the list that is available here (an
# engine module may define ``unavailable_reason() -> str | None``) and can do what the call asks, else
# ``scan``. Measured with seqclf/benchmarks/lstm_engines.py (docs/benchmarks.md): on CPU the C++ kernel,
# which needs a compiler at first use, else fused (within run-to-run noise of scan, with a smaller
# backward); on GPU the Mosaic GPU kernel (Hopper only), then the Pallas one; each GPU kernel must first
# pass a check against fused at run time, in a child process (`auto_check`), else the next of the list
# runs. A cell missing here gets ``scan``.
AUTO = {
  "lstm": {"cpu": ("cpu_kernel", "fused"), "gpu": ("mosaic", "pallas", "fused"), "tpu": ("fused",)},
  "gru": {"cpu": ("cpu_kernel", "fused"), "gpu": ("fused",), "tpu": ("fused",)},
}


def cell_of(cell: Cell | str) -> Cell:
  """The `Cell` itself, or the library's cell of that name (`seqclf.rnn.cells.CELLS`)."""
  if isinstance(cell, Cell):
    return cell
  if cell not in CELLS:
    raise ConfigError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
  return CELLS[cell]


def engines_of(cell: Cell | str) -> dict[str, Engine]:
  """``cell``'s engines by name: ``scan``, then those registered for it in `ENGINES`."""
  name = cell_of(cell).name
  return {"scan": SCAN, **{engine: entry for (of, engine), entry in ENGINES.items() if of == name}}


def known_matmul_precisions(cell: Cell | str) -> tuple[str, ...]:
  """The ``matmul_precision`` values some engine of ``cell`` takes: "float32" (every engine's), then those
  its entries list."""
  listed = (precision for engine in engines_of(cell).values() for precision in engine.matmul_precisions)
  return tuple(dict.fromkeys(("float32", *listed)))


def interpret_requested() -> bool:
  """Whether ``$SEQCLF_INTERPRET=1`` asks for GPU kernel engines to run in their interpreters off a GPU."""
  return os.environ.get(INTERPRET_ENV, "") == "1"


def runs_on(name: str, platform: str, cell: Cell | str) -> bool:
  """Whether ``cell``'s engine ``name`` runs on ``platform``: natively, or interpreted where that was asked for."""
  engine = engines_of(cell)[name]
  return platform in engine.platforms or (platform in engine.interpreted and interpret_requested())


def unavailable_reason(name: str, cell: Cell | str) -> str | None:
  """Why ``cell``'s engine ``name`` cannot run in this process (say, no compiler for its kernel).

  Args:
    name: an engine of ``cell`` (`engines_of`).
    cell: a `Cell` or its name.

  Returns:
    A one-line reason, or None when the engine can run here.
  """
  check = getattr(importlib.import_module(engines_of(cell)[name].module), "unavailable_reason", None)
  return check() if check else None


def function(name: str, cell: Cell | str):
  """``cell``'s engine ``name`` as ``f(params, xs, state, step_mask, input_dropout_mask,
  recurrent_dropout_mask, **options) -> (outputs, state)``, ``state`` a tuple in the cell's order.

  Args:
    name: a concrete engine of ``cell`` (`check_engine` resolves "auto").
    cell: a `Cell` or its name.
  """
  cell = cell_of(cell)
  module = importlib.import_module(engines_of(cell)[name].module)
  per_cell = getattr(module, cell.name, None)
  if per_cell is None:  # the reference runs any cell from its step
    return functools.partial(module.run, cell)

  def run(params, xs, state, *masks, **options):
    outputs, final = per_cell(params, xs, *state, *masks, **options)
    return outputs, final if len(cell.state_names) > 1 else (final,)

  return run


def checked_on_gpu(chosen: str, cell: Cell, hidden: int, matmul_precision: str) -> str:
  """What `auto` runs, given the engine it chose: on a GPU the first of it and the later engines of the
  cell's ``AUTO["gpu"]`` that pass `auto_check`'s check (of the LSTM kernels). Elsewhere, for another
  cell, or when lowering for a GPU this host lacks (no device to check on), ``chosen`` itself."""
  order = AUTO.get(cell.name, {}).get("gpu", ())
  if (
    cell.name != "lstm"
    or lowering.target_platform() != "gpu"
    or jax.default_backend() != "gpu"
    or chosen not in order
  ):
    return chosen
  engines = engines_of(cell)
  candidates = tuple(
    auto_check.Candidate(
      name,
      engines[name].module,
      # The precision the engine runs the request at (one without the keyword computes float32).
      matmul_precision if matmul_precision in engines[name].matmul_precisions else None,
      engines[name].final_state,
    )
    for name in order[order.index(chosen) :]
    if name != auto_check.REFERENCE and unavailable_reason(name, cell) is None
  )
  return auto_check.verified_engine(candidates, hidden, matmul_precision)


def _refusals(
  name: str,
  *,
  cell: Cell,
  masks: str | None,
  input_dropout: bool,
  recurrent_dropout: bool,
  dtypes: tuple[str, ...],
  matmul_precision: str,
  recurrent_activation: str,
) -> list[str]:
  """What engine ``name`` cannot do of what a call asks, each as the tail of an error line."""
  engine = engines_of(cell)[name]
  refusals = []
  if masks == "mask" and engine.masks != "any":
    refusals.append(
      "skips right padding given as lengths= only" if engine.masks == "lengths" else "has no padding masks"
    )
  if masks == "lengths" and engine.masks == "none":
    refusals.append("has no padding masks")
  if input_dropout and not engine.input_dropout:
    refusals.append("has no input dropout")
  if recurrent_dropout and not engine.recurrent_dropout:
    refusals.append("has no recurrent dropout")
  for dtype in dtypes:
    if dtype not in engine.dtypes:
      refusals.append(f"computes in {', '.join(engine.dtypes)}, not {dtype}")
  if matmul_precision not in (engine.matmul_precisions or ("float32",)):
    refusals.append(f"has no matmul_precision={matmul_precision!r}")
  if recurrent_activation not in (engine.recurrent_activations or ("sigmoid",)):
    refusals.append(f"has no recurrent_activation={recurrent_activation!r}")
  return refusals


def _engines_that_can(platform: str, **request) -> list[str]:
  cell = request["cell"]
  return [
    name for name in engines_of(cell) if runs_on(name, platform, cell) and not _refusals(name, **request)
  ]


def _none_can(platform: str, request: dict) -> str:
  """The tail of an error when no engine on ``platform`` can do ``request``: the ones that can elsewhere."""
  engines = engines_of(request["cell"])
  elsewhere = [name for name in engines if not _refusals(name, **request)]
  where = sorted({p for name in elsewhere for p in engines[name].platforms})
  return f"no engine on {platform} can" + (
    f" ({', '.join(elsewhere)} can on {'/'.join(where)})" if elsewhere else ""
  )


def check_engine(
  name: str,
  platform: str | None = None,
  *,
  cell: Cell | str,
  masks: str | None = None,
  input_dropout: bool = False,
  recurrent_dropout: bool = False,
  dtypes=(),
  matmul_precision: str = "float32",
  recurrent_activation: str = "sigmoid",
) -> str:
  """The concrete engine that runs a call, after holding the call against the engine's capabilities.

  Args:
    name: an engine of ``cell`` (`engines_of`), or "auto": the first engine of the cell's
      ``AUTO[platform]`` that is available and can do all of the request, else ``scan``.
    platform: JAX platform; default: the one being traced for (see `seqclf.lowering.target_platform`).
    cell: the cell whose engines the call is held against: a `Cell` or its name ("lstm", "gru").
    masks: None, "mask" (an arbitrary [B, T] mask) or "lengths" (right padding).
    input_dropout, recurrent_dropout: whether the call passes those masks.
    dtypes: the dtypes (anything `jnp.dtype` takes) the engine computes in.
    matmul_precision, recurrent_activation: see `seqclf.rnn.rnn`.

  Returns:
    The engine's name (``name`` itself unless it is "auto").

  Raises:
    ConfigError: one line naming what the engine cannot do and the engines that can.
  """
  cell = cell_of(cell)
  if recurrent_activation not in RECURRENT_ACTIVATIONS:
    raise ConfigError(
      f"unknown recurrent_activation {recurrent_activation!r}; choose one of: {', '.join(RECURRENT_ACTIVATIONS)}"
    )
  platform = platform or lowering.target_platform()
  engines = engines_of(cell)
  label = cell.name.upper()
  precisions = known_matmul_precisions(cell)
  if matmul_precision not in precisions:
    raise ConfigError(
      f"unknown matmul_precision {matmul_precision!r} for the {label}; choose one of: {', '.join(precisions)}"
    )
  request = dict(
    cell=cell,
    masks=masks,
    input_dropout=input_dropout,
    recurrent_dropout=recurrent_dropout,
    dtypes=tuple(dict.fromkeys(jnp.dtype(d).name for d in dtypes)),
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )
  if name == "auto":
    able = _engines_that_can(platform, **request)
    preferences = [engine for engine in AUTO.get(cell.name, {}).get(platform, ()) if engine in able]
    chosen = next((engine for engine in preferences if unavailable_reason(engine, cell) is None), None)
    if chosen is not None:
      return chosen
    if "scan" in able:
      return "scan"
    fix = f"pass engine={' or '.join(repr(e) for e in able)}" if able else _none_can(platform, request)
    raise ConfigError(
      f"no {label} engine that engine='auto' picks on {platform} can do this call "
      f"(scan {'; '.join(_refusals('scan', **request))}); {fix}"
    )
  if name not in engines:
    other = sorted({of.upper() for (of, engine) in ENGINES if engine == name})
    known = f" (it has no {label}; it runs {', '.join(other)})" if other else ""
    raise ConfigError(f"unknown {label} engine {name!r}{known}; choose one of: auto, {', '.join(engines)}")
  if not runs_on(name, platform, cell):
    native = [engine for engine in engines if platform in engines[engine].platforms]
    interpreter = (
      f", or set {INTERPRET_ENV}=1 to run it in its interpreter (slow: for tests and debugging)"
      if platform in engines[name].interpreted
      else ""
    )
    raise ConfigError(
      f"{label} engine {name!r} needs a {' or '.join(engines[name].platforms).upper()} and this process runs on "
      f"{platform}; use engine='auto' or one of {', '.join(native)}{interpreter}"
    )
  refusals = _refusals(name, **request)
  if refusals:
    able = _engines_that_can(platform, **request)
    fix = f"use engine {' or '.join(repr(e) for e in able)}" if able else _none_can(platform, request)
    raise ConfigError(f"{label} engine {name!r} {'; '.join(refusals)}; {fix}")
  return name


def forward_mode_engines(cell: Cell | str) -> list[str]:
  """``cell``'s engines with forward-mode derivatives (``jax.jvp``)."""
  return [name for name, engine in engines_of(cell).items() if engine.forward_mode]

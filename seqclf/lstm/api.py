"""The public LSTM interface: one pure function, many engines.

    from seqclf.lstm import lstm, init_params
    params = init_params(jax.random.key(0), input_size=32, hidden_size=100)
    outputs, (h, c) = lstm(params, xs)                      # xs [B, T, E] -> outputs [B, T, H]
    outputs, (h, c) = lstm(params, xs, lengths=lengths)     # right-padded batch: padding leaves state alone
    outputs, (h, c) = lstm(params, xs, engine="scan")       # any name in ENGINES, or "auto"
    h, (h, c) = lstm(params, xs, return_sequences=False)     # the final h [B, H] only, as Keras' LSTM

Every engine takes the same parameters (see `scan.py` for the layout), gives the same outputs and
gradients (tested against ``scan``), and so is interchangeable, also on a trained checkpoint.

What an engine can do is data in its `ENGINES` entry (`Engine`), and `check_engine` is the one place
that holds a call against it: a request an engine cannot honour is one `ConfigError` line, never an
argument the engine silently drops.

Adding an engine: write ``seqclf/lstm/<name>.py`` exposing ``lstm(params, xs, h0, c0, step_mask,
input_dropout_mask, recurrent_dropout_mask)`` (plus a ``matmul_precision=`` keyword if it offers several)
and add one line to ``ENGINES`` below. An engine that can skip storing per-step outputs sets
``final_state=True`` in its entry; its ``lstm`` then also takes ``return_sequences=`` (a Python bool, always
passed): with False it returns ``(h, (h, c))``, the final h as the outputs, stores nothing per step when no
gradient is taken, and its gradient adds the outputs' cotangent to the final h's. `hoisted.make_lstm` gives
that keyword to an engine built on a `hoisted.Recurrence` (with its ``final_state`` loop, if it has one).
"""

import importlib
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.lstm import auto_check, validation
from seqclf.lstm.scan import RECURRENT_ACTIVATIONS

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


class Engine(NamedTuple):
  """One engine and its capabilities, which `check_engine` holds every call against."""

  module: str  # module holding an engine-signature ``lstm`` function
  platforms: tuple[str, ...]  # JAX platforms it runs on
  doc: str
  # Which padding masks it honours: "any" (any [B, T] mask: left or right padding, holes), "lengths"
  # (right padding only, so `lstm` takes ``lengths=`` and refuses a ``mask=``, which under jit it could
  # not check), or "none" (it runs every step of every sequence).
  masks: str = "any"
  input_dropout: bool = True  # honours ``input_dropout_mask``
  recurrent_dropout: bool = True  # honours ``recurrent_dropout_mask``
  dtypes: tuple[str, ...] = FLOAT_DTYPES  # dtypes of the parameters, inputs and state it computes in
  # The ``matmul_precision`` values its ``lstm`` takes as a keyword. Empty: it takes none and its matmuls
  # are float32 products ("float32" is then the one value accepted).
  matmul_precisions: tuple[str, ...] = ()
  # Platforms where it runs only in an interpreter (a GPU kernel on a CPU: correct, and 100-1000x
  # slower): refused there unless $SEQCLF_INTERPRET=1 asks for it (`interpret_requested`).
  interpreted: tuple[str, ...] = ()
  # The ``recurrent_activation`` values (gate activations, `scan.RECURRENT_ACTIVATIONS`) its ``lstm``
  # takes as a keyword. Empty: it takes none and its gates are sigmoids ("sigmoid" the one value accepted).
  recurrent_activations: tuple[str, ...] = ()
  # Its module's ``lstm`` takes ``return_sequences=`` and with False stores no per-step outputs. Without it,
  # `lstm(..., return_sequences=False)` runs the engine in full and returns its final h as the outputs.
  final_state: bool = False


# The environment variable that lets a GPU kernel engine run in its interpreter where there is no GPU
# (tests, and users who want to step through a kernel): "1" on, anything else off.
INTERPRET_ENV = "SEQCLF_INTERPRET"


def interpret_requested() -> bool:
  """Whether ``$SEQCLF_INTERPRET=1`` asks for GPU kernel engines to run in their interpreters off a GPU."""
  return os.environ.get(INTERPRET_ENV, "") == "1"


def runs_on(name: str, platform: str, cell: str = "lstm") -> bool:
  """Whether ``cell``'s engine ``name`` runs on ``platform``: natively, or interpreted where that was asked for."""
  engine = CELLS[cell][0][name]
  return platform in engine.platforms or (platform in engine.interpreted and interpret_requested())


ENGINES = {
  "scan": Engine(
    "seqclf.lstm.scan",
    ("cpu", "gpu", "tpu"),
    "reference lax.scan cell, autodiff",
    recurrent_activations=tuple(RECURRENT_ACTIVATIONS),
  ),
  "fused": Engine(
    "seqclf.lstm.fused",
    ("cpu", "gpu", "tpu"),
    "hoisted projections + custom-VJP scan",
    recurrent_activations=tuple(RECURRENT_ACTIVATIONS),
    final_state=True,
  ),
  "cpu_kernel": Engine(
    "seqclf.lstm.cpu_kernel",
    ("cpu",),
    "multithreaded C++ recurrence via XLA FFI",
    dtypes=("float32",),
    matmul_precisions=("float32", "bfloat16"),  # bfloat16: CPUs with AVX512-BF16 only (else ConfigError)
  ),
  "pallas": Engine(
    "seqclf.lstm.pallas_gpu",
    ("gpu",),
    "one-launch Pallas recurrence kernel",
    matmul_precisions=("float32", "BF16_BF16_F32_X6", "tensorfloat32", "bfloat16"),
    interpreted=("cpu",),
  ),
  "mosaic": Engine(
    "seqclf.lstm.mosaic_gpu",
    ("gpu",),
    "Hopper Mosaic GPU recurrence on a cluster of SMs (jax >= 0.11)",
    dtypes=("float32",),
    matmul_precisions=("float32", "BF16_BF16_F32_X3", "bfloat16"),  # float32 = X3: three bf16 products
    interpreted=("cpu",),
    final_state=True,
  ),
  "cudnn": Engine(
    "seqclf.lstm.cudnn",
    ("gpu",),
    "jax.experimental.rnn (cuDNN), opt-in",
    masks="lengths",
    recurrent_dropout=False,
    dtypes=("float32",),
  ),
  "flax": Engine(
    "seqclf.lstm.flax_rnn",
    ("cpu", "gpu", "tpu"),
    "Flax's nn.RNN(OptimizedLSTMCell): the baseline to beat",
    masks="none",
    input_dropout=False,
    recurrent_dropout=False,
  ),
}

# What "auto" picks per platform: the first engine of the list that is available here (an engine module
# may define ``unavailable_reason() -> str | None``) and can do what the call asks, else ``scan``.
# Measured with seqclf/benchmarks/lstm_engines.py (docs/benchmarks.md): on CPU the C++ kernel, which needs a
# compiler at first use, else fused (within run-to-run noise of scan, with a smaller backward); on GPU the
# Mosaic GPU kernel (Hopper only), then the Pallas one, not yet measured on a GPU; each must first pass a
# check against fused at run time, in a child process (`auto_check`), else the next of the list runs.
AUTO = {"cpu": ("cpu_kernel", "fused"), "gpu": ("mosaic", "pallas", "fused"), "tpu": ("fused",)}

# The GRU's engines (`seqclf.lstm.gru_api`), their capabilities as data as above; each module exposes the GRU
# engine signature ``gru(params, xs, h0, step_mask, input_dropout_mask, recurrent_dropout_mask)``. An
# engine of `ENGINES` missing here (the GPU kernels, cuDNN) has no GRU, and asking it for one is refused
# naming those that have one.
# float64 too where JAX computes it (with jax_enable_x64), so `scan` can be held to PyTorch in float64.
GRU_ENGINES = {
  "scan": Engine(
    "seqclf.lstm.gru_scan",
    ("cpu", "gpu", "tpu"),
    "reference lax.scan GRU cell, autodiff",
    dtypes=(*FLOAT_DTYPES, "float64"),
    recurrent_activations=tuple(RECURRENT_ACTIVATIONS),
  ),
  "fused": Engine(
    "seqclf.lstm.gru_fused",
    ("cpu", "gpu", "tpu"),
    "hoisted projections + custom-VJP scan",
    dtypes=(*FLOAT_DTYPES, "float64"),
    recurrent_activations=tuple(RECURRENT_ACTIVATIONS),
  ),
  "cpu_kernel": Engine(
    "seqclf.lstm.gru_cpu_kernel",
    ("cpu",),
    "multithreaded C++ recurrence via XLA FFI",
    dtypes=("float32",),
    matmul_precisions=("float32", "bfloat16"),  # bfloat16: CPUs with AVX512-BF16 only (else ConfigError)
  ),
  "flax": Engine(
    "seqclf.lstm.gru_flax",
    ("cpu", "gpu", "tpu"),
    "Flax's nn.RNN(GRUCell): the baseline to beat",
    masks="none",
    input_dropout=False,
    recurrent_dropout=False,
  ),
}
GRU_AUTO = {"cpu": ("cpu_kernel", "fused"), "gpu": ("fused",), "tpu": ("fused",)}

# Each cell's engines and "auto" preferences: `check_engine(..., cell=)` reads them.
CELLS = {"lstm": (ENGINES, AUTO), "gru": (GRU_ENGINES, GRU_AUTO)}


def unavailable_reason(name: str, cell: str = "lstm") -> str | None:
  """Why engine ``name`` cannot run in this process (say, no compiler for its kernel).

  Args:
    name: a name in `ENGINES` (or `GRU_ENGINES` with ``cell="gru"``).
    cell: "lstm" or "gru".

  Returns:
    A one-line reason, or None when the engine can run here.
  """
  check = getattr(importlib.import_module(CELLS[cell][0][name].module), "unavailable_reason", None)
  return check() if check else None


def _checked_on_gpu(chosen: str, hidden: int, matmul_precision: str) -> str:
  """What `auto` runs, given the engine it chose: on a GPU the first of it and the later engines of
  ``AUTO["gpu"]`` that pass `auto_check`'s check. Elsewhere, or when lowering for a GPU this host lacks (no
  device to check on), ``chosen`` itself."""
  order = AUTO["gpu"]
  if lowering.target_platform() != "gpu" or jax.default_backend() != "gpu" or chosen not in order:
    return chosen
  candidates = tuple(
    auto_check.Candidate(
      name,
      ENGINES[name].module,
      # The precision the engine runs the request at (one without the keyword computes float32).
      matmul_precision if matmul_precision in ENGINES[name].matmul_precisions else None,
      ENGINES[name].final_state,
    )
    for name in order[order.index(chosen) :]
    if name != auto_check.REFERENCE and unavailable_reason(name) is None
  )
  return auto_check.verified_engine(candidates, hidden, matmul_precision)


def _refusals(
  name: str,
  *,
  cell: str,
  masks: str | None,
  input_dropout: bool,
  recurrent_dropout: bool,
  dtypes: tuple[str, ...],
  matmul_precision: str,
  recurrent_activation: str,
) -> list[str]:
  """What engine ``name`` cannot do of what a call asks, each as the tail of an error line."""
  engine = CELLS[cell][0][name]
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
  engines = CELLS[request["cell"]][0]
  return [
    name for name in engines if runs_on(name, platform, request["cell"]) and not _refusals(name, **request)
  ]


def _none_can(platform: str, request: dict) -> str:
  """The tail of an error when no engine on ``platform`` can do ``request``: the ones that can elsewhere."""
  engines = CELLS[request["cell"]][0]
  elsewhere = [name for name in engines if not _refusals(name, **request)]
  where = sorted({p for name in elsewhere for p in engines[name].platforms})
  return f"no engine on {platform} can" + (
    f" ({', '.join(elsewhere)} can on {'/'.join(where)})" if elsewhere else ""
  )


def check_engine(
  name: str,
  platform: str | None = None,
  *,
  masks: str | None = None,
  input_dropout: bool = False,
  recurrent_dropout: bool = False,
  dtypes=(),
  matmul_precision: str = "float32",
  cell: str = "lstm",
  recurrent_activation: str = "sigmoid",
) -> str:
  """The concrete engine that runs a call, after holding the call against the engine's capabilities.

  Args:
    name: a name in `ENGINES`, or "auto": the first engine of ``AUTO[platform]`` that is available and
      can do all of the request, else ``scan``.
    platform: JAX platform; default: the one being traced for (see `seqclf.lowering.target_platform`).
    masks: None, "mask" (an arbitrary [B, T] mask) or "lengths" (right padding).
    input_dropout, recurrent_dropout: whether the call passes those masks.
    dtypes: the dtypes (anything `jnp.dtype` takes) of the parameters, inputs and initial state.
    matmul_precision, recurrent_activation: see `lstm`.
    cell: "lstm" or "gru": whose engines (`CELLS`) the call is held against.

  Returns:
    The engine's name in `ENGINES` (``name`` itself unless it is "auto").

  Raises:
    ConfigError: one line naming what the engine cannot do and the engines that can.
  """
  if recurrent_activation not in RECURRENT_ACTIVATIONS:
    raise ConfigError(
      f"unknown recurrent_activation {recurrent_activation!r}; choose one of: {', '.join(RECURRENT_ACTIVATIONS)}"
    )
  platform = platform or lowering.target_platform()
  engines, auto = CELLS[cell]
  label = cell.upper()
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
    preferences = [engine for engine in auto.get(platform, ()) if engine in able]
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
    other = [other for other, (registry, _) in CELLS.items() if name in registry]
    known = f" (it has no {label}; it runs {', '.join(o.upper() for o in other)})" if other else ""
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


def engine_function(name: str, platform: str | None = None):
  """The engine-signature function of an engine.

  Args:
    name: a name in `ENGINES`, or "auto".
    platform: as in `check_engine`.

  Returns:
    The engine module's ``lstm(params, xs, h0, c0, step_mask, input_dropout_mask, recurrent_dropout_mask)``.
  """
  return importlib.import_module(ENGINES[check_engine(name, platform)].module).lstm


def lengths_to_mask(lengths, max_length: int):
  """The mask of right-padded sequences.

  Args:
    lengths: [B] integers, each sequence's number of real steps.
    max_length: T, the padded length.

  Returns:
    [B, T] bool, True on the first ``lengths[b]`` steps of row b.
  """
  return jnp.arange(max_length)[None, :] < jnp.asarray(lengths)[:, None]


def lstm(
  params,
  xs,
  *,
  initial_state=None,
  mask=None,
  lengths=None,
  input_dropout_mask=None,
  recurrent_dropout_mask=None,
  engine: str = "auto",
  matmul_precision: str = "float32",
  recurrent_activation: str = "sigmoid",
  return_sequences: bool = True,
):
  """Runs an LSTM layer over a batch of sequences.

  Args:
    params: ``{"kernel": [E, 4H], "recurrent_kernel": [H, 4H], "bias": [4H]}``, gates packed i, f, g, o.
    xs: [B, T, E] inputs, batch-major (T = 0 or B = 0 returns empty outputs and the initial state).
    initial_state: optional ``(h0, c0)``, each [B, H]; zeros by default.
    mask: optional [B, T] bool; at a False step the state is left unchanged and the output repeats the
      previous ``h`` (so left or right padding, or holes, are skipped exactly).
    lengths: optional [B] ints in [0, T], shorthand for a right-padding mask; not together with ``mask``.
    input_dropout_mask: optional [B, E] multiplier applied to the input at every step (one mask per
      sequence, as Keras' LSTM ``dropout``); already scaled by 1/(1 - rate). Treated as a constant.
    recurrent_dropout_mask: optional [B, H] multiplier applied to ``h`` before the recurrent matmul at
      every step (Keras' ``recurrent_dropout``). Treated as a constant.
    engine: a name in `ENGINES`, or "auto" for the fastest on the current platform that can do the call.
    matmul_precision: the products of the recurrent matmul: "float32" (default), or another value of
      ``jax.default_matmul_precision`` that the engine lists in its ``matmul_precisions`` (say pallas'
      "bfloat16"). The state and the gate arithmetic stay in the inputs' dtype.
    recurrent_activation: the input, forget and output gates' activation (Keras' name): "sigmoid"
      (default) or "hard_sigmoid" (Keras 1's clip(0.2 x + 0.5, 0, 1), the article's), for engines that
      list it in their ``recurrent_activations``.
    return_sequences: True (default) returns every step's h; False only the final h [B, H] as the outputs
      (Keras' ``LSTM(return_sequences=False)``; with a mask, the h of each row's last real step). Engines
      with ``final_state`` in their entry then store no per-step outputs; the others run in full.

  Returns:
    ``(outputs, (h, c))``: outputs [B, T, H] (with ``return_sequences=False`` the final h [B, H]) and the
    final state, each [B, H].

  Raises:
    ConfigError: for a request the engine cannot honour (see `check_engine`); its subclass
      `validation.InputError` (also a ValueError) for arrays that do not fit each other (see
      `validation.check_inputs`). Both at trace time, before any engine runs.
  """
  if not isinstance(return_sequences, bool):
    raise ConfigError(
      f"return_sequences must be a bool, got {return_sequences!r}; "
      "pass True (every step's h) or False (the final h)"
    )
  batch, steps, input_size, hidden = validation.check_inputs(
    params,
    xs,
    gates=4,
    initial_state=initial_state,
    mask=mask,
    lengths=lengths,
    input_dropout_mask=input_dropout_mask,
    recurrent_dropout_mask=recurrent_dropout_mask,
  )
  dtype = xs.dtype
  arrays = [xs, *jax.tree.leaves(params), *jax.tree.leaves(initial_state)]
  name = check_engine(
    engine,
    masks="mask" if mask is not None else "lengths" if lengths is not None else None,
    input_dropout=input_dropout_mask is not None,
    recurrent_dropout=recurrent_dropout_mask is not None,
    dtypes=[jnp.result_type(a) for a in arrays],
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )
  if engine == "auto":
    name = _checked_on_gpu(name, hidden, matmul_precision)
  h0, c0 = initial_state if initial_state is not None else (jnp.zeros((batch, hidden), dtype),) * 2
  if batch == 0 or steps == 0:  # nothing to run: the state stays as it was (every engine, by definition)
    return (jnp.zeros((batch, steps, hidden), dtype) if return_sequences else h0), (h0, c0)
  if lengths is not None:
    mask = lengths_to_mask(lengths, steps)
  if mask is None:
    mask = jnp.ones((batch, steps), bool)
  if input_dropout_mask is None:
    input_dropout_mask = jnp.ones((batch, input_size), dtype)
  if recurrent_dropout_mask is None:
    recurrent_dropout_mask = jnp.ones((batch, hidden), dtype)
  options = {"matmul_precision": matmul_precision} if ENGINES[name].matmul_precisions else {}
  if ENGINES[name].recurrent_activations:
    options["recurrent_activation"] = recurrent_activation
  if ENGINES[name].final_state:
    options["return_sequences"] = return_sequences
  run = importlib.import_module(ENGINES[name].module).lstm
  outputs, state = run(
    params, xs, h0, c0, jnp.asarray(mask, bool), input_dropout_mask, recurrent_dropout_mask, **options
  )
  return (outputs, state) if return_sequences or ENGINES[name].final_state else (state[0], state)


# Keras' LSTM initialisation, shared by `init_params` and the Flax `LSTM` layer.
kernel_init = jax.nn.initializers.glorot_uniform()
recurrent_kernel_init = jax.nn.initializers.orthogonal()


def bias_init(key, shape, dtype=jnp.float32):
  """Zeros, but 1 for the forget gate (the second quarter)."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


def init_params(key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras-style initial parameters: glorot-uniform kernel, orthogonal recurrent kernel, forget bias 1.

  Args:
    key: a `jax.random` key.
    input_size: E, the size of each input step.
    hidden_size: H, the LSTM's units.
    dtype: of the parameters.

  Returns:
    ``{"kernel": [E, 4H], "recurrent_kernel": [H, 4H], "bias": [4H]}``, gates in Keras' order i, f, c, o:
    what `lstm`, the Linen `LSTM` and the NNX ``LSTM`` take.
  """
  k_in, k_rec = jax.random.split(key)
  return {
    "kernel": kernel_init(k_in, (input_size, 4 * hidden_size), dtype),
    "recurrent_kernel": recurrent_kernel_init(k_rec, (hidden_size, 4 * hidden_size), dtype),
    "bias": bias_init(None, (4 * hidden_size,), dtype),
  }

"""The public LSTM interface: one pure function, many engines.

    from seqclf.lstm import lstm, init_params
    params = init_params(jax.random.key(0), input_size=32, hidden_size=100)
    outputs, (h, c) = lstm(params, xs)                      # xs [B, T, E] -> outputs [B, T, H]
    outputs, (h, c) = lstm(params, xs, lengths=lengths)     # right-padded batch: padding leaves state alone
    outputs, (h, c) = lstm(params, xs, engine="scan")       # any name in ENGINES, or "auto"

Every engine takes the same parameters (see `scan.py` for the layout), gives the same outputs and
gradients (tested against ``scan``), and so is interchangeable, also on a trained checkpoint.

What an engine can do is data in its `ENGINES` entry (`Engine`), and `check_engine` is the one place
that holds a call against it: a request an engine cannot honour is one `ConfigError` line, never an
argument the engine silently drops.

Adding an engine: write ``seqclf/lstm/<name>.py`` exposing ``lstm(params, xs, h0, c0, step_mask,
input_dropout_mask, recurrent_dropout_mask)`` (plus a ``matmul_precision=`` keyword if it offers several)
and add one line to ``ENGINES`` below.
"""

import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqclf import lowering
from seqclf.errors import ConfigError
from seqclf.lstm import auto_check
from seqclf.lstm.scan import RECURRENT_ACTIVATIONS

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


class Engine(NamedTuple):
  """One engine and its capabilities, which `check_engine` holds every call against."""

  module: str  # module holding an engine-signature ``lstm`` function
  platforms: tuple[str, ...]  # JAX platforms it runs on (pallas also runs on CPU, in interpret mode)
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
  # The ``recurrent_activation`` values (gate activations, `scan.RECURRENT_ACTIVATIONS`) its ``lstm``
  # takes as a keyword. Empty: it takes none and its gates are sigmoids ("sigmoid" the one value accepted).
  recurrent_activations: tuple[str, ...] = ()


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
    ("gpu", "cpu"),
    "one-launch Pallas recurrence kernel",
    matmul_precisions=("float32", "BF16_BF16_F32_X6", "tensorfloat32", "bfloat16"),
  ),
  "mosaic": Engine(
    "seqclf.lstm.mosaic_gpu",
    ("gpu", "cpu"),
    "Hopper Mosaic GPU recurrence on a cluster of SMs (jax >= 0.11)",
    dtypes=("float32",),
    matmul_precisions=("float32", "BF16_BF16_F32_X3", "bfloat16"),  # float32 = X3: three bf16 products
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
# Measured with benchmarks/lstm_engines.py (see WORKSPACE.md): on CPU the C++ kernel, which needs a
# compiler at first use, else fused (within run-to-run noise of scan, with a smaller backward); on GPU the
# Mosaic GPU kernel (Hopper only), then the Pallas one, not yet measured on a GPU; each must first pass a
# check against fused at run time (`auto_check`).
AUTO = {"cpu": ("cpu_kernel", "fused"), "gpu": ("mosaic", "pallas", "fused"), "tpu": ("fused",)}


def unavailable_reason(name: str) -> str | None:
  """Why engine ``name`` cannot run in this process (say, no compiler for its kernel), or None."""
  check = getattr(importlib.import_module(ENGINES[name].module), "unavailable_reason", None)
  return check() if check else None


def _refusals(
  name: str,
  *,
  masks: str | None,
  input_dropout: bool,
  recurrent_dropout: bool,
  dtypes: tuple[str, ...],
  matmul_precision: str,
  recurrent_activation: str,
) -> list[str]:
  """What engine ``name`` cannot do of what a call asks, each as the tail of an error line."""
  engine = ENGINES[name]
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
  return [name for name in ENGINES if platform in ENGINES[name].platforms and not _refusals(name, **request)]


def check_engine(
  name: str,
  platform: str | None = None,
  *,
  masks: str | None = None,
  input_dropout: bool = False,
  recurrent_dropout: bool = False,
  dtypes=(),
  matmul_precision: str = "float32",
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

  Raises:
    ConfigError: one line naming what the engine cannot do and the engines that can.
  """
  if recurrent_activation not in RECURRENT_ACTIVATIONS:
    raise ConfigError(
      f"unknown recurrent_activation {recurrent_activation!r}; choose one of: {', '.join(RECURRENT_ACTIVATIONS)}"
    )
  platform = platform or lowering.target_platform()
  request = dict(
    masks=masks,
    input_dropout=input_dropout,
    recurrent_dropout=recurrent_dropout,
    dtypes=tuple(dict.fromkeys(jnp.dtype(d).name for d in dtypes)),
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )
  if name == "auto":
    able = _engines_that_can(platform, **request)
    preferences = [engine for engine in AUTO.get(platform, ()) if engine in able]
    chosen = next((engine for engine in preferences if unavailable_reason(engine) is None), None)
    if chosen is not None:
      return chosen
    if "scan" in able:
      return "scan"
    fix = f"pass engine={' or '.join(repr(e) for e in able)}" if able else f"no engine on {platform} can"
    raise ConfigError(
      f"no LSTM engine that engine='auto' picks on {platform} can do this call "
      f"(scan {'; '.join(_refusals('scan', **request))}); {fix}"
    )
  if name not in ENGINES:
    raise ConfigError(f"unknown LSTM engine {name!r}; choose one of: auto, {', '.join(ENGINES)}")
  if platform not in ENGINES[name].platforms:
    raise ConfigError(
      f"LSTM engine {name!r} does not run on {platform}; it needs one of "
      f"{', '.join(ENGINES[name].platforms)} (use engine='auto')"
    )
  refusals = _refusals(name, **request)
  if refusals:
    able = _engines_that_can(platform, **request)
    fix = f"use engine {' or '.join(repr(e) for e in able)}" if able else f"no engine on {platform} can"
    raise ConfigError(f"LSTM engine {name!r} {'; '.join(refusals)}; {fix}")
  return name


def resolve_engine(name: str, platform: str | None = None) -> str:
  """Maps ``name`` (an engine or "auto") to a concrete engine for ``platform``, for a plain float32 call."""
  return check_engine(name, platform)


def engine_function(name: str, platform: str | None = None):
  """The engine-signature function of engine ``name`` (after resolving "auto")."""
  return importlib.import_module(ENGINES[resolve_engine(name, platform)].module).lstm


def lengths_to_mask(lengths, max_length: int):
  """[B] lengths -> [B, T] bool mask, True on the first ``length`` steps (right padding)."""
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
):
  """Runs an LSTM layer over a batch of sequences.

  Args:
    params: ``{"kernel": [E, 4H], "recurrent_kernel": [H, 4H], "bias": [4H]}``, gates packed i, f, g, o.
    xs: [B, T, E] inputs, batch-major.
    initial_state: optional ``(h0, c0)``, each [B, H]; zeros by default.
    mask: optional [B, T] bool; at a False step the state is left unchanged and the output repeats the
      previous ``h`` (so left or right padding, or holes, are skipped exactly).
    lengths: optional [B] ints, shorthand for a right-padding mask; not together with ``mask``.
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

  Returns:
    ``(outputs, (h, c))``: outputs [B, T, H] and the final state, each [B, H].

  Raises:
    ConfigError: for a request the engine cannot honour (see `check_engine`).
  """
  batch, steps, input_size = xs.shape
  hidden = params["recurrent_kernel"].shape[0]
  dtype = xs.dtype
  if mask is not None and lengths is not None:
    raise ConfigError("pass either mask or lengths to lstm(), not both")
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
    name = auto_check.checked(
      name, platform=lowering.target_platform(), hidden=hidden, matmul_precision=matmul_precision
    )
  if lengths is not None:
    mask = lengths_to_mask(lengths, steps)
  if mask is None:
    mask = jnp.ones((batch, steps), bool)
  h0, c0 = initial_state if initial_state is not None else (jnp.zeros((batch, hidden), dtype),) * 2
  if input_dropout_mask is None:
    input_dropout_mask = jnp.ones((batch, input_size), dtype)
  if recurrent_dropout_mask is None:
    recurrent_dropout_mask = jnp.ones((batch, hidden), dtype)
  options = {"matmul_precision": matmul_precision} if ENGINES[name].matmul_precisions else {}
  if ENGINES[name].recurrent_activations:
    options["recurrent_activation"] = recurrent_activation
  run = importlib.import_module(ENGINES[name].module).lstm
  return run(params, xs, h0, c0, mask.astype(bool), input_dropout_mask, recurrent_dropout_mask, **options)


# Keras' LSTM initialisation, shared by `init_params` and the Flax `LSTM` layer.
kernel_init = jax.nn.initializers.glorot_uniform()
recurrent_kernel_init = jax.nn.initializers.orthogonal()


def bias_init(key, shape, dtype=jnp.float32):
  """Zeros, but 1 for the forget gate (the second quarter)."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


def init_params(key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras-style initial parameters: glorot-uniform kernel, orthogonal recurrent kernel, forget bias 1."""
  k_in, k_rec = jax.random.split(key)
  return {
    "kernel": kernel_init(k_in, (input_size, 4 * hidden_size), dtype),
    "recurrent_kernel": recurrent_kernel_init(k_rec, (hidden_size, 4 * hidden_size), dtype),
    "bias": bias_init(None, (4 * hidden_size,), dtype),
  }

"""The public LSTM interface: one pure function, many engines.

    from seqclf.lstm import lstm, init_params
    params = init_params(jax.random.key(0), input_size=32, hidden_size=100)
    outputs, (h, c) = lstm(params, xs)                      # xs [B, T, E] -> outputs [B, T, H]
    outputs, (h, c) = lstm(params, xs, lengths=lengths)     # right-padded batch: padding leaves state alone
    outputs, (h, c) = lstm(params, xs, engine="scan")       # any name in ENGINES, or "auto"

Every engine takes the same parameters (see `scan.py` for the layout), gives the same outputs and
gradients (tested against ``scan``), and so is interchangeable, also on a trained checkpoint.

Adding an engine: write ``seqclf/lstm/<name>.py`` exposing ``lstm(params, xs, h0, c0, step_mask,
input_dropout_mask, recurrent_dropout_mask)`` and add one line to ``ENGINES`` below.
"""

import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqclf import lowering
from seqclf.errors import ConfigError


class Engine(NamedTuple):
  module: str  # module holding an engine-signature ``lstm`` function
  platforms: tuple  # JAX platforms it runs on (pallas also runs on CPU, in interpret mode)
  doc: str
  # False for an engine that runs every step of every sequence as given: the api then refuses a mask,
  # lengths or dropout masks instead of ignoring them.
  masks: bool = True


ENGINES = {
  "scan": Engine("seqclf.lstm.scan", ("cpu", "gpu", "tpu"), "reference lax.scan cell, autodiff"),
  "fused": Engine("seqclf.lstm.fused", ("cpu", "gpu", "tpu"), "hoisted projections + custom-VJP scan"),
  "cpu_kernel": Engine("seqclf.lstm.cpu_kernel", ("cpu",), "multithreaded C++ recurrence via XLA FFI"),
  "pallas": Engine("seqclf.lstm.pallas_gpu", ("gpu", "cpu"), "one-launch Pallas recurrence kernel"),
  "cudnn": Engine("seqclf.lstm.cudnn", ("gpu",), "jax.experimental.rnn (cuDNN), opt-in"),
  "flax": Engine(
    "seqclf.lstm.flax_rnn",
    ("cpu", "gpu", "tpu"),
    "Flax's nn.RNN(OptimizedLSTMCell): the baseline to beat",
    masks=False,
  ),
}

# What "auto" picks per platform: the first engine of the list that is available here (an engine module
# may define ``unavailable_reason() -> str | None``). Measured with benchmarks/lstm_engines.py (see
# WORKSPACE.md): on CPU the C++ kernel, which needs a compiler at first use, else fused (within run-to-run
# noise of scan, with a smaller backward); on GPU the one-launch Pallas kernel, not yet measured on a GPU.
AUTO = {"cpu": ("cpu_kernel", "fused"), "gpu": ("pallas",), "tpu": ("fused",)}


def unavailable_reason(name: str) -> str | None:
  """Why engine ``name`` cannot run in this process (say, no compiler for its kernel), or None."""
  check = getattr(importlib.import_module(ENGINES[name].module), "unavailable_reason", None)
  return check() if check else None


def resolve_engine(name: str, platform: str | None = None) -> str:
  """Maps ``name`` (an engine or "auto") to a concrete engine for ``platform`` (default: the one being
  traced for, see `seqclf.lowering.target_platform`)."""
  platform = platform or lowering.target_platform()
  if name == "auto":
    preferences = AUTO.get(platform, ("scan",))
    return next((engine for engine in preferences if unavailable_reason(engine) is None), "scan")
  if name not in ENGINES:
    raise ConfigError(f"unknown LSTM engine {name!r}; choose one of: auto, {', '.join(ENGINES)}")
  if platform not in ENGINES[name].platforms:
    raise ConfigError(
      f"LSTM engine {name!r} does not run on {platform}; it needs one of "
      f"{', '.join(ENGINES[name].platforms)} (use engine='auto')"
    )
  return name


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
    engine: a name in `ENGINES`, or "auto" for the fastest on the current platform.

  Returns:
    ``(outputs, (h, c))``: outputs [B, T, H] and the final state, each [B, H].
  """
  batch, steps, input_size = xs.shape
  hidden = params["recurrent_kernel"].shape[0]
  dtype = xs.dtype
  if mask is not None and lengths is not None:
    raise ConfigError("pass either mask or lengths to lstm(), not both")
  if lengths is not None:
    mask = lengths_to_mask(lengths, steps)
  name = resolve_engine(engine)
  if not ENGINES[name].masks and any(
    m is not None for m in (mask, input_dropout_mask, recurrent_dropout_mask)
  ):
    raise ConfigError(
      f"LSTM engine {name!r} runs every step unmasked and has no dropout masks; use "
      "another engine for masked or dropout models"
    )
  if mask is None:
    mask = jnp.ones((batch, steps), bool)
  h0, c0 = initial_state if initial_state is not None else (jnp.zeros((batch, hidden), dtype),) * 2
  if input_dropout_mask is None:
    input_dropout_mask = jnp.ones((batch, input_size), dtype)
  if recurrent_dropout_mask is None:
    recurrent_dropout_mask = jnp.ones((batch, hidden), dtype)
  return engine_function(name)(
    params, xs, h0, c0, mask.astype(bool), input_dropout_mask, recurrent_dropout_mask
  )


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

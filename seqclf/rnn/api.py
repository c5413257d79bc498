"""The public recurrent layer: one pure function over any cell, many engines.

    from seqclf.rnn import lstm, gru, init_params, init_gru_params
    params = init_params(jax.random.key(0), input_size=32, hidden_size=100)
    outputs, (h, c) = lstm(params, xs)                      # xs [B, T, E] -> outputs [B, T, H]
    outputs, (h, c) = lstm(params, xs, lengths=lengths)     # right-padded batch: padding leaves state alone
    outputs, (h, c) = lstm(params, xs, engine="scan")       # any engine of the cell, or "auto"
    h, (h, c) = lstm(params, xs, return_sequences=False)     # the final h [B, H] only, as Keras' LSTM
    outputs, h = gru(init_gru_params(key, 32, 100), xs)     # the GRU: one state array

`lstm` and `gru` are `rnn` with `seqclf.rnn.cells.LSTM_CELL` and `GRU_CELL`. Every engine of a cell takes
the same parameters, gives the same outputs and gradients (tested against ``scan``), and so is
interchangeable, also on a trained checkpoint. What an engine can do is data in its
`seqclf.rnn.engines.ENGINES` entry, held against every call by `seqclf.rnn.engines.check_engine`.

Precision (flax's rule): a call computes in ``dtype``, by default the promoted dtype of the inputs, the
parameters and the initial state. So float32 parameters with bfloat16 or float16 inputs (the usual mixed
precision) compute and return float32, on every engine; ``dtype=jnp.bfloat16`` computes in bfloat16
(state included) with the float32 parameters cast for the call, on the engines that list bfloat16.
"""

import functools

import jax
import jax.numpy as jnp

from seqclf.errors import ConfigError
from seqclf.rnn import engines, validation
from seqclf.rnn.cells import GRU_CELL, LSTM_CELL, Cell, init_cell_params


def lengths_to_mask(lengths, max_length: int):
  """The mask of right-padded sequences.

  Args:
    lengths: [B] integers, each sequence's number of real steps.
    max_length: T, the padded length.

  Returns:
    [B, T] bool, True on the first ``lengths[b]`` steps of row b.
  """
  return jnp.arange(max_length)[None, :] < jnp.asarray(lengths)[:, None]


def compute_dtype(xs, params, initial_state=None, dtype=None):
  """The dtype a call computes in: ``dtype`` if given, else the promoted dtype of ``xs``, the parameters
  and the initial state (float32 parameters and bfloat16 inputs: float32)."""
  if dtype is not None:
    return jnp.dtype(dtype)
  return jnp.dtype(
    jnp.result_type(*(jnp.result_type(a) for a in jax.tree.leaves((xs, params, initial_state))))
  )


def _forward_mode_refusal(cell: Cell, name: str) -> ConfigError:
  able = " or ".join(repr(e) for e in engines.forward_mode_engines(cell))
  return ConfigError(
    f"{cell.name.upper()} engine {name!r} has a hand-written VJP and no forward-mode derivative (jax.jvp, "
    f"jax.jacfwd, jax.hessian); use engine {able} for those, or reverse mode (jax.grad, jax.vjp)"
  )


def rnn(
  cell: Cell,
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
  dtype=None,
):
  """Runs a recurrent layer of ``cell`` over a batch of sequences.

  Args:
    cell: a `seqclf.rnn.cells.Cell` (``LSTM_CELL``, ``GRU_CELL``, or one of your own, which runs on
      ``scan``).
    params: the cell's ``{"kernel", "recurrent_kernel", "bias"}`` (`Cell.param_shapes`).
    xs: [B, T, E] inputs, batch-major (T = 0 or B = 0 returns empty outputs and the initial state). This
      and every other array argument may be any array-like `jax.numpy.asarray` takes (nested lists).
    initial_state: optional, one [B, H] array per name of ``cell.state_names`` (a tuple of them, or the
      array itself for a cell with one); zeros by default.
    mask: optional [B, T] bool; at a False step the state is left unchanged and the output repeats the
      previous ``h`` (so left or right padding, or holes, are skipped exactly; PyTorch's packed sequences
      give zeros there instead: ``outputs * mask[..., None]`` turns one into the other).
    lengths: optional [B] ints in [0, T], shorthand for a right-padding mask; not together with ``mask``.
    input_dropout_mask: optional [B, E] multiplier of the input at every step (one mask per sequence, as
      Keras' ``dropout``); already scaled by 1/(1 - rate). Treated as a constant.
    recurrent_dropout_mask: optional [B, H] multiplier of ``h`` before the recurrent matmul at every step
      (Keras' ``recurrent_dropout``). Treated as a constant.
    engine: an engine of the cell (`seqclf.rnn.engines.engines_of`), or "auto" for the fastest on the
      current platform that can do the call.
    matmul_precision: the products of the recurrent matmul: "float32" (default), or another value of
      ``jax.default_matmul_precision`` that the engine lists in its ``matmul_precisions`` (say
      cpu_kernel's "bfloat16"). The state and the gate arithmetic stay in the compute dtype.
    recurrent_activation: the gates' activation (Keras' name): "sigmoid" (default) or "hard_sigmoid"
      (Keras 1's clip(0.2 x + 0.5, 0, 1), the article's), for engines that list it.
    return_sequences: True (default) returns every step's h; False only the final h [B, H] as the outputs
      (Keras' ``return_sequences=False``; with a mask, the h of each row's last real step). Engines with
      ``final_state`` in their entry then store no per-step outputs; the others run in full.
    dtype: the dtype the call computes in (module docstring); None: promoted from the arrays.

  Returns:
    ``(outputs, state)``: outputs [B, T, H] (with ``return_sequences=False`` the final h [B, H]) and the
    final state in the form of ``initial_state``, in the compute dtype.

  Raises:
    ConfigError (a ValueError): for a request the engine cannot honour (`seqclf.rnn.engines.check_engine`),
      forward-mode differentiation of an engine without it; its subclass `validation.InputError` for
      arrays that do not fit each other (`validation.check_inputs`). At trace time, before any engine runs.
  """
  if not isinstance(return_sequences, bool):
    raise ConfigError(
      f"return_sequences must be a bool, got {return_sequences!r}; "
      "pass True (every step's h) or False (the final h)"
    )
  single = len(cell.state_names) == 1
  state = None if initial_state is None else (initial_state,) if single else tuple(initial_state)
  # Array-likes (nested lists, tuples, numpy arrays) are taken as arrays, as jax.numpy takes them.
  array = functools.partial(validation.as_array, cell)
  xs, mask, lengths = array("xs", xs), array("mask", mask), array("lengths", lengths)
  input_dropout_mask = array("input_dropout_mask", input_dropout_mask)
  recurrent_dropout_mask = array("recurrent_dropout_mask", recurrent_dropout_mask)
  if state is not None:
    state = tuple(array(f"initial_state {name}0", part) for name, part in zip(cell.state_names, state))
  if hasattr(params, "keys"):
    params = {name: array(f"params[{name!r}]", params[name]) for name in params.keys()}
  batch, steps, input_size, hidden = validation.check_inputs(
    params,
    xs,
    cell=cell,
    initial_state=state,
    mask=mask,
    lengths=lengths,
    input_dropout_mask=input_dropout_mask,
    recurrent_dropout_mask=recurrent_dropout_mask,
  )
  dtype = compute_dtype(xs, params, state, dtype)
  name = engines.check_engine(
    engine,
    cell=cell,
    masks="mask" if mask is not None else "lengths" if lengths is not None else None,
    input_dropout=input_dropout_mask is not None,
    recurrent_dropout=recurrent_dropout_mask is not None,
    dtypes=[dtype],
    matmul_precision=matmul_precision,
    recurrent_activation=recurrent_activation,
  )
  if engine == "auto":
    name = engines.checked_on_gpu(name, cell, hidden, matmul_precision)
  cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tree)  # noqa: E731
  xs, params = cast(xs), cast(params)
  state = cast(state) if state is not None else (jnp.zeros((batch, hidden), dtype),) * len(cell.state_names)

  def public(outputs, final):
    return outputs, final[0] if single else tuple(final)

  if batch == 0 or steps == 0:  # nothing to run: the state stays as it was (every engine, by definition)
    return public(jnp.zeros((batch, steps, hidden), dtype) if return_sequences else state[0], state)
  if lengths is not None:
    mask = lengths_to_mask(lengths, steps)
  if mask is None:
    mask = jnp.ones((batch, steps), bool)
  ones = jnp.ones((batch, input_size), dtype), jnp.ones((batch, hidden), dtype)
  input_dropout_mask = ones[0] if input_dropout_mask is None else cast(input_dropout_mask)
  recurrent_dropout_mask = ones[1] if recurrent_dropout_mask is None else cast(recurrent_dropout_mask)
  entry = engines.engines_of(cell)[name]
  options = {"matmul_precision": matmul_precision} if entry.matmul_precisions else {}
  if entry.recurrent_activations:
    options["recurrent_activation"] = recurrent_activation
  if entry.final_state:
    options["return_sequences"] = return_sequences
  run = engines.function(name, cell)
  try:
    outputs, final = run(
      params, xs, state, jnp.asarray(mask, bool), input_dropout_mask, recurrent_dropout_mask, **options
    )
  except TypeError as error:  # JAX's words for jax.jvp through a custom_vjp
    if "forward-mode" in str(error) and not entry.forward_mode:
      raise _forward_mode_refusal(cell, name) from None
    raise
  return public(outputs if return_sequences or entry.final_state else final[0], final)


def lstm(params, xs, **options):
  """Runs an LSTM layer: `rnn` with `seqclf.rnn.cells.LSTM_CELL`.

  Args:
    params: ``{"kernel": [E, 4H], "recurrent_kernel": [H, 4H], "bias": [4H]}``, gates packed i, f, g, o
      (Keras' i, f, c, o).
    xs: [B, T, E] inputs.
    **options: `rnn`'s keywords; ``initial_state`` is ``(h0, c0)``.

  Returns:
    ``(outputs [B, T, H], (h, c))``; the outputs are the final h [B, H] with ``return_sequences=False``.
  """
  return rnn(LSTM_CELL, params, xs, **options)


def gru(params, xs, **options):
  """Runs a GRU layer (Keras' ``GRU(reset_after=True)`` = PyTorch's ``nn.GRU``): `rnn` with
  `seqclf.rnn.cells.GRU_CELL`.

  Args:
    params: ``{"kernel": [E, 3H], "recurrent_kernel": [H, 3H], "bias": [2, 3H]}``, gates packed z, r, n,
      the bias rows the input and the recurrent bias.
    xs: [B, T, E] inputs.
    **options: `rnn`'s keywords; ``initial_state`` is ``h0`` [B, H].

  Returns:
    ``(outputs [B, T, H], h)``; the outputs are the final h [B, H] with ``return_sequences=False``.
  """
  return rnn(GRU_CELL, params, xs, **options)


def init_params(key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras' initial LSTM parameters: glorot-uniform kernel, orthogonal recurrent kernel, forget bias 1.

  Args:
    key: a `jax.random` key.
    input_size: E, the size of each input step.
    hidden_size: H, the LSTM's units.
    dtype: of the parameters (any floating dtype).

  Returns:
    ``{"kernel": [E, 4H], "recurrent_kernel": [H, 4H], "bias": [4H]}``: what `lstm`, the Linen `LSTM` and
    the NNX ``LSTM`` take.
  """
  return init_cell_params(LSTM_CELL, key, input_size, hidden_size, dtype)


def init_gru_params(key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras' initial GRU parameters: glorot-uniform kernel, orthogonal recurrent kernel, zero biases.

  Args:
    key: a `jax.random` key.
    input_size: E, the size of each input step.
    hidden_size: H, the GRU's units.
    dtype: of the parameters (any floating dtype).

  Returns:
    ``{"kernel": [E, 3H], "recurrent_kernel": [H, 3H], "bias": [2, 3H]}``: what `gru` and the GRU layers
    take.
  """
  return init_cell_params(GRU_CELL, key, input_size, hidden_size, dtype)

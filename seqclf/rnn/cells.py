"""Recurrent cells as data: what a cell is, independent of the engines that run it.

A `Cell` names its gates, its state and its parameters (Keras' names and layout, Keras' initialisation),
gives the reference step that engine ``scan`` runs, and converts its parameters from and to Keras and
PyTorch. `seqclf.rnn.rnn` runs any `Cell` on ``scan``; the faster engines register per cell in
`seqclf.rnn.engines`. Adding a cell is one `Cell` value (a test defines flax's minimal gated unit in its
own file and runs it through `rnn`, both layer families, `Bidirectional` and `Stacked`).

Every cell's parameters are ``kernel`` [E, G * H], ``recurrent_kernel`` [H, G * H] and ``bias``
([G * H], or [k, G * H] for a cell with k bias rows), the G gates packed in the last axis.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.errors import ConfigError

# float32 products on every platform (``matmul_precision="float32"``, the engine contract): left to XLA's
# default, a GPU would use TF32 and a TPU bfloat16 passes.
matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def hard_sigmoid(x):
  """Keras 1's ``hard_sigmoid``, the article's gate activation: clip(0.2 x + 0.5, 0, 1), slope 0.2 on
  (-2.5, 2.5) and flat outside (unlike ``jax.nn.hard_sigmoid`` and Keras 3's, whose slope is 1/6)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


# The gates' activations (``recurrent_activation``, Keras' name); candidates and outputs use tanh.
RECURRENT_ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "hard_sigmoid": hard_sigmoid}


def _glorot_uniform(key, shape, dtype=jnp.float32):
  """Keras' ``glorot_uniform``; the empty kernel of inputs of width 0 (a valid layer: its state evolves
  from the bias and the recurrent kernel) has nothing to draw, and JAX's fans would divide by its 0 rows."""
  if math.prod(shape) == 0:
    return jnp.zeros(shape, dtype)
  return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


# Keras' initialisers of the kernels, shared by every cell.
kernel_init = _glorot_uniform
recurrent_kernel_init = jax.nn.initializers.orthogonal()


class Cell(NamedTuple):
  """A recurrent cell.

  Attributes:
    name: what errors and engine registries call it ("lstm", "gru").
    gates: G, the gate blocks packed in the parameters' last axis.
    state_names: the state's parts, ``h`` first (every cell's output is its h); one name: the state is
      that array itself, several: a tuple in this order.
    bias_rows: 0 for a bias [G * H], k for [k, G * H].
    bias_init: Keras' initialiser of the bias, ``(key, shape, dtype) -> array``.
    step: the reference step ``step(params, state, x_t, recurrent_dropout_mask, gate) -> state``, ``state``
      a tuple in ``state_names`` order, ``x_t`` [B, E] with the input dropout applied, ``gate`` the gates'
      activation; engine ``scan`` runs it and every other engine is tested against it.
    from_keras, to_keras: parameters from and to the Keras layer's ``get_weights()`` list.
    from_torch, to_torch: parameters from and to one layer of the PyTorch module's ``state_dict()``.
  """

  name: str
  gates: int
  state_names: tuple[str, ...]
  bias_rows: int
  bias_init: Callable
  step: Callable
  from_keras: Callable | None = None
  to_keras: Callable | None = None
  from_torch: Callable | None = None
  to_torch: Callable | None = None

  def param_shapes(self, input_size: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """The parameters' shapes for inputs of width E = ``input_size`` and H = ``hidden`` units."""
    width = self.gates * hidden
    return {
      "kernel": (input_size, width),
      "recurrent_kernel": (hidden, width),
      "bias": (self.bias_rows, width) if self.bias_rows else (width,),
    }

  def initializers(self) -> dict[str, Callable]:
    """Keras' initialiser of each parameter, ``(key, shape, dtype) -> array``."""
    return {"kernel": kernel_init, "recurrent_kernel": recurrent_kernel_init, "bias": self.bias_init}


def check_sizes(cell: Cell, input_size: int, hidden: int, names=("input_size", "hidden_size")) -> None:
  """Refuses the sizes of a layer that cannot exist: no units (a hidden size below 1), or inputs of
  negative width. Inputs of width 0 are valid: the state still evolves from the bias and the recurrent
  kernel. ``names``: the arguments the caller took the two sizes as, for the message."""
  if hidden < 1:
    raise ConfigError(
      f"{cell.name.upper()} {names[1]} must be at least 1 (the units that carry its state), got {hidden!r}"
    )
  if input_size < 0:
    raise ConfigError(
      f"{cell.name.upper()} {names[0]} must be at least 0 (the width of each input step), got {input_size!r}"
    )


def init_cell_params(cell: Cell, key, input_size: int, hidden_size: int, dtype=jnp.float32):
  """Keras' initial parameters of ``cell``: glorot-uniform kernel, orthogonal recurrent kernel, the
  cell's bias.

  Args:
    cell: the cell.
    key: a `jax.random` key.
    input_size: E, the size of each input step.
    hidden_size: H, the cell's units.
    dtype: of the parameters, any floating dtype (drawn in float32, then cast: the orthogonal draw has
      no bfloat16 or float16 kernel).

  Returns:
    ``{"kernel", "recurrent_kernel", "bias"}`` as `Cell.param_shapes`.

  Raises:
    ConfigError: for a hidden size below 1 or a negative input size (`check_sizes`).
  """
  check_sizes(cell, input_size, hidden_size)
  keys = dict(zip(("kernel", "recurrent_kernel"), jax.random.split(key)), bias=jax.random.fold_in(key, 2))
  draw_dtype = jnp.promote_types(dtype, jnp.float32)
  shapes, inits = cell.param_shapes(input_size, hidden_size), cell.initializers()
  return {name: inits[name](keys[name], shape, draw_dtype).astype(dtype) for name, shape in shapes.items()}


# --- LSTM -------------------------------------------------------------------------------------------


def lstm_bias_init(key, shape, dtype=jnp.float32):
  """Zeros, but 1 for the forget gate (the second quarter)."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


def lstm_step(params, state, x_t, recurrent_dropout_mask, gate):
  """One LSTM step, gates packed i, f, g, o (Keras' i, f, c, o)."""
  h, c = state
  z = matmul(x_t, params["kernel"]) + matmul(h * recurrent_dropout_mask, params["recurrent_kernel"])
  i, f, g, o = jnp.split(z + params["bias"], 4, axis=-1)
  c = gate(f) * c + gate(i) * jnp.tanh(g)
  return gate(o) * jnp.tanh(c), c


def _numpy(tensor):
  detach = getattr(tensor, "detach", None)  # a torch.Tensor, without importing torch here
  return np.asarray(detach().cpu().numpy() if detach else tensor)


def _torch_arrays(state_dict, layer: int, module: str):
  try:
    return tuple(
      _numpy(state_dict[f"{k}_l{layer}"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
  except KeyError as error:
    raise ConfigError(
      f"from_torch() needs an nn.{module} state_dict with biases (bias=True); {error.args[0]!r} is missing"
    ) from None


def lstm_from_keras(weights):
  """``keras.layers.LSTM(...).get_weights()`` ([kernel, recurrent_kernel, bias]) as params."""
  kernel, recurrent_kernel, bias = (jnp.asarray(w) for w in weights)
  return {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}


def to_keras(params):
  """Params as the Keras layer's ``set_weights()`` list [kernel, recurrent_kernel, bias] (same layout)."""
  return [np.asarray(params[k]) for k in ("kernel", "recurrent_kernel", "bias")]


def lstm_from_torch(state_dict, layer: int = 0):
  """One layer of ``torch.nn.LSTM(...).state_dict()`` as params: PyTorch stores W^T, gates i, f, g, o, and
  two biases, which add up to ours."""
  w_ih, w_hh, b_ih, b_hh = _torch_arrays(state_dict, layer, "LSTM")
  return {
    "kernel": jnp.asarray(w_ih.T),
    "recurrent_kernel": jnp.asarray(w_hh.T),
    "bias": jnp.asarray(b_ih + b_hh),
  }


def lstm_to_torch(params, layer: int = 0):
  """Params as one layer of ``torch.nn.LSTM``'s ``state_dict()`` (numpy arrays; the bias as ``bias_ih``,
  ``bias_hh`` zero): ``module.load_state_dict({k: torch.from_numpy(v) ...})``."""
  bias = np.asarray(params["bias"])
  return {
    f"weight_ih_l{layer}": np.asarray(params["kernel"]).T.copy(),
    f"weight_hh_l{layer}": np.asarray(params["recurrent_kernel"]).T.copy(),
    f"bias_ih_l{layer}": bias,
    f"bias_hh_l{layer}": np.zeros_like(bias),
  }


LSTM_CELL = Cell(
  name="lstm",
  gates=4,
  state_names=("h", "c"),
  bias_rows=0,
  bias_init=lstm_bias_init,
  step=lstm_step,
  from_keras=lstm_from_keras,
  to_keras=to_keras,
  from_torch=lstm_from_torch,
  to_torch=lstm_to_torch,
)

# --- GRU ----------------------------------------------------------------------------------------------
# The cell Keras 3 (``GRU(reset_after=True)``, its default) and PyTorch (``nn.GRU``) share:
#     z = gate(x W_z + b_z + h U_z + b'_z)          update gate
#     r = gate(x W_r + b_r + h U_r + b'_r)          reset gate
#     n = tanh(x W_n + b_n + r * (h U_n + b'_n))    candidate; the reset gate scales h U_n + b'_n
#     h_new = z * h + (1 - z) * n
# with gates packed z, r, n and the bias [2, 3H]: input bias b (row 0), recurrent bias b' (row 1).


def gru_step(params, state, x_t, recurrent_dropout_mask, gate):
  """One GRU step (Keras' ``reset_after=True``); the carried ``z * h`` keeps the undropped h, as Keras."""
  (h,) = state
  bias = params["bias"]
  x_z, x_r, x_n = jnp.split(matmul(x_t, params["kernel"]) + bias[0], 3, axis=-1)
  h_z, h_r, h_n = jnp.split(
    matmul(h * recurrent_dropout_mask, params["recurrent_kernel"]) + bias[1], 3, axis=-1
  )
  z, r = gate(x_z + h_z), gate(x_r + h_r)
  n = jnp.tanh(x_n + r * h_n)
  return (z * h + (1.0 - z) * n,)


def gru_from_keras(weights):
  """``keras.layers.GRU(reset_after=True).get_weights()`` ([kernel, recurrent_kernel, bias]) as params."""
  kernel, recurrent_kernel, bias = (jnp.asarray(w) for w in weights)
  if bias.ndim != 2:
    raise ConfigError(
      f"from_keras() takes a Keras GRU with reset_after=True (bias [2, 3H]); got a bias of shape {bias.shape}"
    )
  return {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}


def _torch_gru_order(hidden: int):
  """Columns z, r, n <-> rows r, z, n: the permutation is its own inverse."""
  return np.concatenate([np.arange(hidden, 2 * hidden), np.arange(hidden), np.arange(2 * hidden, 3 * hidden)])


def gru_from_torch(state_dict, layer: int = 0):
  """One layer of ``torch.nn.GRU(...).state_dict()`` as params: PyTorch stores W^T with gates r, z, n."""
  w_ih, w_hh, b_ih, b_hh = _torch_arrays(state_dict, layer, "GRU")
  order = _torch_gru_order(w_hh.shape[1])
  return {
    "kernel": jnp.asarray(w_ih[order].T),
    "recurrent_kernel": jnp.asarray(w_hh[order].T),
    "bias": jnp.asarray(np.stack([b_ih[order], b_hh[order]])),
  }


def gru_to_torch(params, layer: int = 0):
  """Params as one layer of ``torch.nn.GRU``'s ``state_dict()`` (numpy arrays)."""
  kernel, recurrent_kernel, bias = (np.asarray(params[k]) for k in ("kernel", "recurrent_kernel", "bias"))
  order = _torch_gru_order(recurrent_kernel.shape[0])
  return {
    f"weight_ih_l{layer}": kernel[:, order].T.copy(),
    f"weight_hh_l{layer}": recurrent_kernel[:, order].T.copy(),
    f"bias_ih_l{layer}": bias[0][order],
    f"bias_hh_l{layer}": bias[1][order],
  }


GRU_CELL = Cell(
  name="gru",
  gates=3,
  state_names=("h",),
  bias_rows=2,
  bias_init=jax.nn.initializers.zeros,
  step=gru_step,
  from_keras=gru_from_keras,
  to_keras=to_keras,
  from_torch=gru_from_torch,
  to_torch=gru_to_torch,
)

# The library's cells by name (`seqclf.models` and the engine registry read it).
CELLS = {cell.name: cell for cell in (LSTM_CELL, GRU_CELL)}

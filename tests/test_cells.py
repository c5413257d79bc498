"""A cell is data: a third cell, flax's minimal gated unit (MGU), defined here and nowhere in the package,
runs through `rnn`, the Linen and NNX layers, `Bidirectional` and `Stacked` on engine ``scan``, and equals
flax's own ``nn.MGUCell``."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqclf.errors import ConfigError
from seqclf.rnn import Bidirectional, Cell, Recurrent, Stacked, init_cell_params, rnn
from seqclf.rnn import nnx as rnn_nnx
from seqclf.rnn.cells import matmul

RTOL, ATOL = 1e-5, 1e-5


def mgu_step(params, state, x_t, recurrent_dropout_mask, gate):
  """f = gate(x W_f + b_f + h U_f + b'_f); n = tanh(x W_n + b_n + f * (h U_n + b'_n)); h' = (1 - f) n + f h."""
  (h,) = state
  x_f, x_n = jnp.split(matmul(x_t, params["kernel"]) + params["bias"][0], 2, axis=-1)
  h_f, h_n = jnp.split(
    matmul(h * recurrent_dropout_mask, params["recurrent_kernel"]) + params["bias"][1], 2, axis=-1
  )
  f = gate(x_f + h_f)
  n = jnp.tanh(x_n + f * h_n)
  return ((1.0 - f) * n + f * h,)


MGU = Cell(
  name="mgu",
  gates=2,
  state_names=("h",),
  bias_rows=2,
  bias_init=jax.nn.initializers.zeros,
  step=mgu_step,
)


class LinenMGU(Recurrent):
  cell = MGU


class NnxMGU(rnn_nnx.Recurrent):
  cell = MGU


def _inputs(batch=3, steps=6, input_size=4, hidden=5, seed=0):
  rng = np.random.default_rng(seed)
  params = init_cell_params(MGU, jax.random.key(seed), input_size, hidden)
  params["bias"] = params["bias"].at[0].set(jnp.asarray(rng.normal(0, 0.3, 2 * hidden), jnp.float32))
  xs = jnp.asarray(rng.normal(size=(batch, steps, input_size)), jnp.float32)
  return params, xs


def _close(actual, expected):
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), actual, expected)


def test_the_cell_through_rnn_equals_flax_mgu():
  params, xs = _inputs()
  hidden = 5
  # flax's cell has no recurrent bias on f: ours is zero there (row 1, first block) as initialised.
  flax_params = {
    "if": {"kernel": params["kernel"][:, :hidden], "bias": params["bias"][0, :hidden]},
    "in": {"kernel": params["kernel"][:, hidden:], "bias": params["bias"][0, hidden:]},
    "hf": {"kernel": params["recurrent_kernel"][:, :hidden]},
    "hn": {"kernel": params["recurrent_kernel"][:, hidden:], "bias": params["bias"][1, hidden:]},
  }
  with jax.default_matmul_precision("float32"):
    h_flax, outputs_flax = nn.RNN(nn.MGUCell(hidden), return_carry=True).apply(
      {"params": {"cell": flax_params}}, xs
    )
  outputs, h = rnn(MGU, params, xs, engine="scan")
  _close((outputs, h), (outputs_flax, h_flax))
  assert rnn(MGU, params, xs)[0].shape == (3, 6, 5)  # auto: the cell's only engine, scan


def test_masks_lengths_dropout_initial_state_and_gradients():
  params, xs = _inputs()
  lengths = jnp.array([6, 2, 0])
  h0 = jnp.ones((3, 5))
  outputs, h = rnn(MGU, params, xs, lengths=lengths, initial_state=h0)
  np.testing.assert_array_equal(h[2], h0[2])  # a row with no steps keeps its initial state
  _close(h[1], rnn(MGU, params, xs[1:2, :2], initial_state=h0[1:2])[1][0])
  masks = {"input_dropout_mask": jnp.full((3, 4), 2.0), "recurrent_dropout_mask": jnp.full((3, 5), 0.5)}
  grads = jax.grad(lambda p: jnp.sum(rnn(MGU, p, xs, **masks, return_sequences=False)[0]))(params)
  assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))


def test_other_engines_are_refused_naming_the_cells_engines_and_bad_parameters_by_the_cells_specs():
  params, xs = _inputs()
  with pytest.raises(
    ConfigError, match=re.escape("unknown MGU engine 'fused' (it has no MGU; it runs GRU, LSTM)")
  ):
    rnn(MGU, params, xs, engine="fused")
  with pytest.raises(ConfigError, match=re.escape("mgu(): params['bias'] must be [2, 10] for hidden size 5")):
    rnn(MGU, {**params, "bias": jnp.zeros(10)}, xs)


def test_linen_and_nnx_layers_of_the_cell_run_the_pure_function():
  _, xs = _inputs()
  layer = LinenMGU(5)
  variables = layer.init(jax.random.key(1), xs)
  assert {k: v.shape for k, v in variables["params"].items()} == {
    "kernel": (4, 10),
    "recurrent_kernel": (5, 10),
    "bias": (2, 10),
  }
  _close(layer.apply(variables, xs), rnn(MGU, variables["params"], xs))
  module = NnxMGU(4, 5, rngs=nnx.Rngs(0))
  rnn_nnx.from_linen(module, variables["params"])
  _close(module(xs), layer.apply(variables, xs))


def test_bidirectional_and_stacked_layers_of_the_cell_in_both_families():
  _, xs = _inputs()
  lengths = jnp.array([6, 3, 1])
  linen = Stacked([Bidirectional(LinenMGU(5), LinenMGU(3)), LinenMGU(2, return_sequences=False)])
  variables = linen.init(jax.random.key(2), xs)
  h, state = linen.apply(variables, xs, lengths=lengths)
  assert h.shape == (3, 2)
  _close(h, state)
  rngs = nnx.Rngs(0)
  module = rnn_nnx.Stacked(
    [
      rnn_nnx.Bidirectional(NnxMGU(4, 5, rngs=rngs), NnxMGU(4, 3, rngs=rngs)),
      NnxMGU(8, 2, return_sequences=False, rngs=rngs),
    ]
  )
  rnn_nnx.from_linen(module, variables["params"])
  _close(module(xs, lengths=lengths), (h, state))

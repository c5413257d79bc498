"""The GRU layers: Linen `seqclf.rnn.GRU` and NNX `seqclf.rnn.nnx.GRU` run the pure function on their
parameters, convert with `to_linen`/`from_linen`, and compose in `Bidirectional` and `Stacked`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqclf.errors import ConfigError
from seqclf.rnn import GRU, Bidirectional, Stacked, gru
from seqclf.rnn import nnx as lstm_nnx

RTOL, ATOL = 1e-5, 1e-5


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def _batch(batch=3, steps=6, features=4):
  xs = jax.random.normal(jax.random.key(0), (batch, steps, features))
  return xs, jnp.array([steps, 2, 4][:batch])


@pytest.mark.parametrize("engine", ["scan", "fused", "cpu_kernel"])
def test_linen_and_nnx_gru_run_the_pure_function(engine):
  xs, lengths = _batch()
  layer = GRU(5, engine=engine)
  variables = layer.init(jax.random.key(1), xs)
  params = variables["params"]
  assert {k: v.shape for k, v in params.items()} == {
    "kernel": (4, 15),
    "recurrent_kernel": (5, 15),
    "bias": (2, 15),
  }
  expected = gru(params, xs, lengths=lengths, engine="scan")
  _assert_close(layer.apply(variables, xs, lengths=lengths), expected)
  module = lstm_nnx.GRU(4, 5, engine=engine, rngs=nnx.Rngs(params=7))
  lstm_nnx.from_linen(module, params)
  _assert_close(module(xs, lengths=lengths), expected)
  _assert_close(lstm_nnx.to_linen(module), params)


def test_bidirectional_and_stacked_grus_in_linen_and_nnx():
  xs, lengths = _batch()
  stack = Stacked([Bidirectional(GRU(5), GRU(3)), GRU(6)])
  variables = stack.init(jax.random.key(2), xs)
  outputs, h = stack.apply(variables, xs, lengths=lengths)
  assert outputs.shape == (3, 6, 6) and h.shape == (3, 6)
  rngs = nnx.Rngs(params=0)
  module = lstm_nnx.Stacked(
    [
      lstm_nnx.Bidirectional(lstm_nnx.GRU(4, 5, rngs=rngs), lstm_nnx.GRU(4, 3, rngs=rngs)),
      lstm_nnx.GRU(8, 6, rngs=rngs),
    ]
  )
  lstm_nnx.from_linen(module, variables["params"])
  _assert_close(module(xs, lengths=lengths), (outputs, h))
  # the backward GRU reads each row reversed within its length
  params = variables["params"]["layers_0"]
  _, back_h = gru(params["backward"], xs[:1, ::-1], engine="scan")
  _, (_, bidirectional_h) = Bidirectional(GRU(5), GRU(3)).apply({"params": params}, xs[:1])
  _assert_close(bidirectional_h, back_h)


def test_dropout_is_off_at_eval_and_reproducible_under_a_seed():
  xs, _ = _batch()
  layer = GRU(5, input_dropout=0.3, recurrent_dropout=0.3, engine="cpu_kernel")
  variables = layer.init(jax.random.key(0), xs)
  train = [
    layer.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(s)}) for s in (1, 1, 2)
  ]
  _assert_close(train[0], train[1])
  assert not np.allclose(train[0][0], train[2][0])
  _assert_close(layer.apply(variables, xs), gru(variables["params"], xs, engine="scan"))
  module = lstm_nnx.GRU(4, 5, input_dropout=0.3, rngs=nnx.Rngs(params=0, dropout=1))
  module.eval()
  _assert_close(module(xs), gru(lstm_nnx.to_linen(module), xs, engine="scan"))


def test_an_engine_without_dropout_is_refused_when_the_layer_is_built():
  xs, _ = _batch()
  with pytest.raises(ConfigError, match="GRU engine 'flax' has no recurrent dropout"):
    GRU(5, recurrent_dropout=0.2, engine="flax").init(jax.random.key(0), xs)

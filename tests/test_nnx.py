"""The NNX layers (`seqclf.rnn.nnx`) against the Linen layers and the pure function, and in training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from seqclf.errors import ConfigError
from seqclf.rnn import engines, lstm
from seqclf.rnn import linen as linen_layers
from seqclf.rnn import nnx as lstm_nnx
from tests import synthetic

RTOL, ATOL = 1e-5, 1e-5
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")
GPU_ONLY = pytest.mark.skipif(jax.default_backend() != "gpu", reason="the cudnn engine runs on a GPU only")
# Every engine, each with the padding it takes: flax none, cudnn right padding as lengths.
ENGINES = [
  ("scan", "mask"),
  ("fused", "mask"),
  pytest.param("cpu_kernel", "mask", marks=CPU_ONLY),
  ("pallas", "mask"),
  ("flax", None),
  pytest.param("cudnn", "lengths", marks=GPU_ONLY),
]


@pytest.fixture(autouse=True)
def interpreted_off_a_gpu(monkeypatch):
  """Off a GPU the GPU kernel engines run in their interpreters only when asked for."""
  monkeypatch.setenv(engines.INTERPRET_ENV, "1")


@pytest.fixture(autouse=True)
def float32_matmuls():  # the Linen and NNX layers are compared to 1e-5 also on a GPU
  with jax.default_matmul_precision("float32"):
    yield


def _batch(batch=3, steps=6, features=4, seed=0):
  keys = jax.random.split(jax.random.key(seed), 2)
  xs = jax.random.normal(keys[0], (batch, steps, features))
  lengths = jnp.array([steps, 2, 4][:batch])
  return xs, lengths


def _padding(kind, lengths, steps):
  if kind == "mask":  # left padding: an arbitrary mask
    return {"mask": jnp.arange(steps)[None] >= (steps - lengths)[:, None]}
  return {"lengths": lengths} if kind == "lengths" else {}


def _assert_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


def _loss(outputs_and_state):
  outputs, state = outputs_and_state
  weights = jnp.linspace(-1.0, 2.0, outputs.shape[-1])
  return jnp.sum(outputs * weights) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(state))


@pytest.mark.parametrize("engine, padding", ENGINES)
def test_lstm_equals_the_linen_layer_and_the_pure_function(engine, padding):
  xs, lengths = _batch()
  kwargs = _padding(padding, lengths, xs.shape[1])
  model = lstm_nnx.LSTM(4, 5, engine=engine, rngs=nnx.Rngs(0))
  params = lstm_nnx.to_linen(model)
  assert set(params) == {"kernel", "recurrent_kernel", "bias"}
  linen = linen_layers.LSTM(5, engine=engine)
  expected = lstm(params, xs, engine="scan", **kwargs)
  _assert_close(model(xs, **kwargs), expected)
  _assert_close(linen.apply({"params": params}, xs, **kwargs), expected)

  nnx_grads = nnx.grad(lambda m: _loss(m(xs, **kwargs)))(model)
  linen_grads = jax.grad(lambda p: _loss(linen.apply({"params": p}, xs, **kwargs)))(params)
  pure_grads = jax.grad(lambda p: _loss(lstm(p, xs, engine="scan", **kwargs)))(params)
  _assert_close(lstm_nnx.to_linen(nnx_grads), pure_grads)
  _assert_close(linen_grads, pure_grads)


@pytest.mark.parametrize("engine, padding", ENGINES)
def test_layers_on_inputs_of_width_0_equal_the_pure_function(engine, padding):
  # No input features: the state evolves from the bias and the recurrent kernel, from a non-zero state
  # (from zeros, Keras' initial LSTM stays at zero).
  xs, lengths = _batch(features=0)
  kwargs = _padding(padding, lengths, xs.shape[1])
  kwargs["initial_state"] = tuple(jax.random.normal(jax.random.key(k), (3, 5)) for k in (1, 2))
  model = lstm_nnx.LSTM(0, 5, engine=engine, rngs=nnx.Rngs(0))
  _assert_close(model(xs, **kwargs), lstm(lstm_nnx.to_linen(model), xs, engine="scan", **kwargs))
  outputs, variables = linen_layers.LSTM(5, engine=engine).init_with_output(jax.random.key(0), xs, **kwargs)
  _assert_close(outputs, lstm(variables["params"], xs, engine="scan", **kwargs))


@pytest.mark.parametrize(
  "build",
  [
    lambda: lstm_nnx.LSTM(4, 0, rngs=nnx.Rngs(0)),
    lambda: linen_layers.LSTM(0).init(jax.random.key(0), jnp.ones((1, 2, 4))),
  ],
  ids=["nnx", "linen"],
)
def test_a_layer_without_units_is_refused_naming_features(build):
  with pytest.raises(ConfigError, match="LSTM features must be at least 1"):
    build()


@pytest.mark.parametrize("engine, padding", ENGINES)
def test_return_sequences_false_equals_the_linen_layer_and_the_pure_function(engine, padding):
  xs, lengths = _batch()
  kwargs = _padding(padding, lengths, xs.shape[1])
  model = lstm_nnx.LSTM(4, 5, engine=engine, return_sequences=False, rngs=nnx.Rngs(0))
  params = lstm_nnx.to_linen(model)
  linen = linen_layers.LSTM(5, engine=engine, return_sequences=False)
  expected = lstm(params, xs, engine="scan", return_sequences=False, **kwargs)
  outputs, state = model(xs, **kwargs)
  assert outputs.shape == (3, 5)
  _assert_close((outputs, state), expected)
  _assert_close(linen.apply({"params": params}, xs, **kwargs), expected)
  nnx_grads = nnx.grad(lambda m: _loss(m(xs, **kwargs)))(model)
  pure_grads = jax.grad(lambda p: _loss(lstm(p, xs, engine="scan", return_sequences=False, **kwargs)))(params)
  _assert_close(lstm_nnx.to_linen(nnx_grads), pure_grads)


def _linen_and_nnx_stacks(engine="fused"):
  """Stacked([Bidirectional(LSTM, LSTM), LSTM]) in Linen and in NNX, the NNX one holding Linen's params."""
  xs, _ = _batch()
  linen = linen_layers.Stacked(
    [
      linen_layers.Bidirectional(linen_layers.LSTM(5, engine), linen_layers.LSTM(3, engine)),
      linen_layers.LSTM(6, engine),
    ]
  )
  params = linen.init(jax.random.key(1), xs)["params"]
  rngs = nnx.Rngs(2)
  model = lstm_nnx.Stacked(
    [
      lstm_nnx.Bidirectional(
        lstm_nnx.LSTM(4, 5, engine=engine, rngs=rngs), lstm_nnx.LSTM(4, 3, engine=engine, rngs=rngs)
      ),
      lstm_nnx.LSTM(8, 6, engine=engine, rngs=rngs),
    ]
  )
  return linen, params, lstm_nnx.from_linen(model, params)


@pytest.mark.parametrize("padding", ["mask", "lengths", None])
def test_bidirectional_stack_equals_the_linen_one(padding):
  xs, lengths = _batch()
  kwargs = _padding(padding, lengths, xs.shape[1])
  linen, params, model = _linen_and_nnx_stacks()
  _assert_close(model(xs, **kwargs), linen.apply({"params": params}, xs, **kwargs))
  nnx_grads = nnx.grad(lambda m: _loss(m(xs, **kwargs)))(model)
  linen_grads = jax.grad(lambda p: _loss(linen.apply({"params": p}, xs, **kwargs)))(params)
  _assert_close(lstm_nnx.to_linen(nnx_grads), linen_grads)


def test_a_stack_ending_in_return_sequences_false_equals_the_linen_one_and_refuses_it_elsewhere():
  xs, lengths = _batch()
  linen, params, model = _linen_and_nnx_stacks()
  model.layers[-1].return_sequences = False
  outputs, state = model(xs, lengths=lengths)
  _, expected_state = linen.apply({"params": params}, xs, lengths=lengths)
  np.testing.assert_array_equal(outputs, state[0])
  _assert_close(state, expected_state)
  bidirectional = model.layers[0]
  bidirectional.forward.return_sequences = bidirectional.backward.return_sequences = False
  h, (forward_state, backward_state) = bidirectional(xs, lengths=lengths)
  np.testing.assert_array_equal(h, jnp.concatenate([forward_state[0], backward_state[0]], axis=-1))
  with pytest.raises(ConfigError, match="layer 0 of a stack has return_sequences=False, .*last layer only"):
    model(xs, lengths=lengths)


def test_parameters_convert_both_ways_in_one_call():
  _, params, model = _linen_and_nnx_stacks()
  assert set(params) == {"layers_0", "layers_1"} and set(params["layers_0"]) == {"forward", "backward"}
  jax.tree.map(np.testing.assert_array_equal, lstm_nnx.to_linen(model), params)
  with pytest.raises(
    ValueError, match="parameter layers_0/forward/bias has shape \\(24,\\), this module.s \\(20,\\)"
  ):
    lstm_nnx.from_linen(model, {**params, "layers_0": {**params["layers_0"], "forward": params["layers_1"]}})
  with pytest.raises(ValueError, match="hold \\['layers_0'\\], but this module has"):
    lstm_nnx.from_linen(model, {"layers_0": params["layers_0"]})


def test_dropout_uses_the_rng_stream_and_is_off_in_eval_mode():
  xs, _ = _batch()
  model = lstm_nnx.LSTM(4, 5, input_dropout=0.5, recurrent_dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
  plain = lstm(lstm_nnx.to_linen(model), xs)
  first, second = model(xs), model(xs)  # the stream advances: a new mask per call
  assert not np.allclose(first[0], second[0]) and not np.allclose(first[0], plain[0])
  again = lstm_nnx.LSTM(4, 5, input_dropout=0.5, recurrent_dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
  _assert_close(again(xs), first)  # the same seeds, the same masks
  model.eval()
  _assert_close(model(xs), plain)
  model.train()
  assert not np.allclose(model(xs)[0], plain[0])


def test_jit_and_split_merge():
  xs, lengths = _batch()
  _, _, model = _linen_and_nnx_stacks()
  eager = model(xs, lengths=lengths)
  _assert_close(nnx.jit(lambda m, x, n: m(x, lengths=n))(model, xs, lengths), eager)
  graphdef, state = nnx.split(model)
  _assert_close(nnx.merge(graphdef, state)(xs, lengths=lengths), eager)
  _assert_close(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, lengths=lengths))(state, xs), eager)


class _Classifier(nnx.Module):
  """Embedding -> LSTM (masked, recurrent dropout) -> Linear: the article's model, in NNX."""

  def __init__(self, vocab: int, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab, 8, rngs=rngs)
    self.lstm = lstm_nnx.LSTM(8, 16, recurrent_dropout=0.1, rngs=rngs)
    self.head = nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, tokens):
    _, (h, _) = self.lstm(self.embed(tokens), mask=tokens != 0)
    return self.head(h)[:, 0]


def test_a_small_nnx_model_trains_with_nnx_optimizer():
  data = synthetic.signal_task()
  model = _Classifier(vocab=40, rngs=nnx.Rngs(params=0, dropout=1))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, tokens, labels):
    def loss(model):
      return optax.sigmoid_binary_cross_entropy(model(tokens), labels).mean()

    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train, jnp.float32)
  for epoch in range(8):
    order = np.random.default_rng(epoch).permutation(len(x))
    for start in range(0, len(x), 32):
      rows = order[start : start + 32]
      train_step(model, optimizer, x[rows], y[rows])
  model.eval()
  accuracy = jnp.mean((model(jnp.asarray(data.x_test)) > 0) == jnp.asarray(data.y_test))
  assert accuracy >= 0.95, accuracy

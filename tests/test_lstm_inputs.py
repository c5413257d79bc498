"""Bad inputs to the LSTM: every engine refuses the same ones at trace time (`seqclf.rnn.validation`),
the C++ kernel refuses buffers that disagree even when called directly, and NaN and infinities flow
through every engine, forward and backward, exactly where they flow through `scan`."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn import LSTM, engines, gru, init_gru_params, init_params, linen, lstm, nnx
from seqclf.rnn.validation import InputError

CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cpu_kernel engine runs on CPU only")
ENGINES = ["scan", "fused", pytest.param("cpu_kernel", marks=CPU_ONLY)]


def _params(input_size=3, hidden=5, seed=0):
  params = init_params(jax.random.key(seed), input_size, hidden)
  return {k: v + 0.1 * jax.random.normal(jax.random.key(seed + 1), v.shape) for k, v in params.items()}


def _xs(batch=2, steps=4, input_size=3, seed=2):
  return jax.random.normal(jax.random.key(seed), (batch, steps, input_size))


BAD_CALLS = {
  # name: (keyword changes to lstm(params, xs), the words the error must contain)
  "wider inputs": (dict(xs=_xs(input_size=4)), "xs has 4 features per step but params['kernel'] is [3, 20]"),
  "narrower inputs": (dict(xs=_xs(input_size=2)), "xs has 2 features"),
  "rank 2 inputs": (dict(xs=jnp.zeros((2, 3))), "rank 3"),
  "rank 4 inputs": (dict(xs=jnp.zeros((2, 4, 3, 1))), "rank 3"),
  "integer inputs": (dict(xs=jnp.zeros((2, 4, 3), jnp.int32)), "floating-point"),
  "kernel of another hidden size": (dict(params={**_params(), "kernel": jnp.zeros((3, 24))}), "[E, 20]"),
  "recurrent kernel not [H, 4H]": (
    dict(params={**_params(), "recurrent_kernel": jnp.zeros((5, 5))}),
    "[H, 4 * H]",
  ),
  "bias of the wrong size": (
    dict(params={**_params(), "bias": jnp.zeros(19)}),
    "params['bias'] must be [20]",
  ),
  # PyTorch's b_ih and b_hh stacked, on a batch of 2: scan added bias row b to batch row b.
  "a bias of two rows (the GRU's layout)": (
    dict(params={**_params(), "bias": jnp.zeros((2, 20))}),
    "params['bias'] must be [20] for hidden size 5, got [2, 20]",
  ),
  "a bias of three rows": (dict(params={**_params(), "bias": jnp.zeros((3, 20))}), "got [3, 20]"),
  "missing bias": (
    dict(params={k: v for k, v in _params().items() if k != "bias"}),
    "kernel, recurrent_kernel and bias",
  ),
  "zero hidden size": (
    dict(params={"kernel": jnp.zeros((3, 0)), "recurrent_kernel": jnp.zeros((0, 0)), "bias": jnp.zeros(0)}),
    "at least 1",
  ),
  "initial state of another batch": (
    dict(initial_state=(jnp.zeros((3, 5)),) * 2),
    "initial_state h0 must be [2, 5]",
  ),
  "initial state of another width": (
    dict(initial_state=(jnp.zeros((2, 5)), jnp.zeros((2, 6)))),
    "initial_state c0",
  ),
  "one state array": (dict(initial_state=(jnp.zeros((2, 5)),)), "initial_state must be (h0, c0)"),
  "mask of another length": (dict(mask=jnp.ones((2, 5), bool)), "mask must be [2, 4]"),
  "mask of floats": (dict(mask=jnp.ones((2, 4))), "mask must be bool"),
  "lengths of another batch": (dict(lengths=jnp.array([1, 2, 3])), "lengths must be [2]"),
  "negative lengths": (dict(lengths=jnp.array([-1, 2])), "lengths must lie in [0, 4]"),
  "lengths past the steps": (dict(lengths=jnp.array([5, 2])), "lengths must lie in [0, 4]"),
  "float lengths": (dict(lengths=jnp.array([1.0, 2.0])), "lengths must be integers"),
  "mask and lengths": (dict(mask=jnp.ones((2, 4), bool), lengths=jnp.array([1, 2])), "not both"),
  "input dropout of another width": (
    dict(input_dropout_mask=jnp.ones((2, 4))),
    "input_dropout_mask must be [2, 3]",
  ),
  "recurrent dropout of another width": (
    dict(recurrent_dropout_mask=jnp.ones((2, 4))),
    "recurrent_dropout_mask must be [2, 5]",
  ),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_every_engine_refuses_inputs_that_do_not_fit_at_trace_time(engine, case):
  changes, words = BAD_CALLS[case]
  arguments = {"params": _params(), "xs": _xs(), **changes}
  params, xs = arguments.pop("params"), arguments.pop("xs")
  with pytest.raises(InputError, match=re.escape(words)):
    lstm(params, xs, engine=engine, **arguments)
  # The same under jit (shapes and dtypes are static; the lengths' values are then unknown).
  if "lengths must lie" not in words:
    with pytest.raises(InputError, match=re.escape(words)):
      jax.jit(lambda p, x, a: lstm(p, x, engine=engine, **a))(params, xs, arguments)


def test_lengths_and_masks_may_be_python_lists():
  expected = lstm(_params(), _xs(), lengths=jnp.array([4, 2]), engine="scan")
  np.testing.assert_array_equal(lstm(_params(), _xs(), lengths=[4, 2], engine="scan")[0], expected[0])
  mask = [[True] * 4, [True, True, False, False]]
  np.testing.assert_array_equal(lstm(_params(), _xs(), mask=mask, engine="scan")[0], expected[0])
  with pytest.raises(InputError, match=re.escape("lengths must lie in [0, 4]")):
    lstm(_params(), _xs(), lengths=[4, 5], engine="scan")


def _listed(array):
  return np.asarray(array).tolist()


@pytest.mark.parametrize("engine", ENGINES)
def test_every_array_argument_may_be_nested_python_lists(engine):
  params, xs = _params(), _xs()
  arguments = dict(
    initial_state=(jnp.full((2, 5), 0.3), jnp.full((2, 5), -0.2)),
    mask=jnp.array([[True] * 4, [True, False, True, True]]),
    input_dropout_mask=jnp.full((2, 3), 1.25),
    recurrent_dropout_mask=jnp.full((2, 5), 0.8),
  )
  expected = lstm(params, xs, engine=engine, **arguments)
  listed = {name: jax.tree.map(_listed, value) for name, value in arguments.items()}
  as_lists = lstm(jax.tree.map(_listed, params), _listed(xs), engine=engine, **listed)
  as_tuples = lstm(params, tuple(map(tuple, np.asarray(xs).tolist())), engine=engine, **arguments)
  for actual in (as_lists, as_tuples):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
      np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
  gru_params = init_gru_params(jax.random.key(0), 3, 5)
  h0 = jnp.full((2, 5), 0.3)
  np.testing.assert_allclose(
    gru(gru_params, _listed(xs), initial_state=_listed(h0), engine=engine)[1],
    gru(gru_params, xs, initial_state=h0, engine=engine)[1],
    rtol=1e-6,
    atol=1e-6,
  )


def test_layers_take_nested_python_lists_as_inputs():
  xs = _xs()
  for layer in (linen.LSTM(5), linen.GRU(5)):
    variables = layer.init(jax.random.key(0), xs)
    expected = layer.apply(variables, xs)
    for a, e in zip(
      jax.tree.leaves(layer.apply(variables, _listed(xs))), jax.tree.leaves(expected), strict=True
    ):
      np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def test_an_argument_that_is_no_array_is_one_input_error_naming_it():
  with pytest.raises(InputError, match="xs must be an array or nested lists of numbers of one shape"):
    lstm(_params(), [[[1.0, 2.0, 3.0]], [[1.0]]])  # ragged
  with pytest.raises(InputError, match="initial_state c0 must be an array"):
    lstm(_params(), _xs(), initial_state=(jnp.zeros((2, 5)), "zeros"))


def test_input_errors_are_config_errors_and_value_errors():
  """So drivers print them as one error line and library callers catch them as ValueError."""
  assert issubclass(InputError, ConfigError) and issubclass(InputError, ValueError)


def test_the_layers_refuse_the_same_inputs():
  params = LSTM(5).init(jax.random.key(0), _xs())
  with pytest.raises(InputError, match="mask must be"):
    LSTM(5).apply(params, _xs(), mask=jnp.ones((2, 3), bool))
  with pytest.raises(InputError, match="rank 3"):
    LSTM(5).init(jax.random.key(0), jnp.zeros((4, 3)))
  layer = nnx.LSTM(3, 5, rngs=__import__("flax").nnx.Rngs(0))
  with pytest.raises(InputError, match="xs has 2 features"):
    layer(_xs(input_size=2))
  with pytest.raises(InputError, match=re.escape("lengths must lie in [0, 4]")):
    layer(_xs(), lengths=jnp.array([0, 9]))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3), (0, 0, 3)])
def test_empty_time_or_batch_returns_the_initial_state(engine, shape):
  params = _params()
  state = (jnp.ones((shape[0], 5)), 2 * jnp.ones((shape[0], 5)))
  outputs, (h, c) = lstm(params, jnp.zeros(shape), initial_state=state, engine=engine)
  assert outputs.shape == (*shape[:2], 5)
  np.testing.assert_array_equal(h, state[0])
  np.testing.assert_array_equal(c, state[1])
  grads = jax.grad(
    lambda p, st: jnp.sum(lstm(p, jnp.zeros(shape), initial_state=st, engine=engine)[1][0]), argnums=(0, 1)
  )(params, state)
  assert all(not np.any(g) for g in jax.tree.leaves(grads[0]))
  np.testing.assert_array_equal(grads[1][0], np.ones((shape[0], 5)))


# --- NaN and infinities -------------------------------------------------------------------------------


def _nonfinite_case(where: str, value: float, seed: int = 0):
  """params, xs, state and upstream weights with one ``value`` placed ``where``."""
  batch, steps, input_size, hidden = 5, 6, 4, 20
  keys = jax.random.split(jax.random.key(seed), 4)
  params = _params(input_size, hidden, seed)
  xs = jax.random.normal(keys[0], (batch, steps, input_size))
  state = (jax.random.normal(keys[1], (batch, hidden)), jax.random.normal(keys[2], (batch, hidden)))
  upstream = jax.random.normal(keys[3], (batch, steps, hidden))
  if where == "input":
    xs = xs.at[1, 2, 3].set(value)
  elif where == "kernel":
    params = {**params, "kernel": params["kernel"].at[2, 7].set(value)}
  elif where == "recurrent_kernel":
    params = {**params, "recurrent_kernel": params["recurrent_kernel"].at[4, 45].set(value)}
  elif where == "bias":
    params = {**params, "bias": params["bias"].at[61].set(value)}
  elif where == "state":
    state = (state[0], state[1].at[3, 8].set(value))
  elif where == "upstream":
    upstream = upstream.at[2, 4, 1].set(value)
  return params, xs, state, upstream


def _outputs_and_grads(engine, params, xs, state, upstream, **kwargs):
  """One jitted call: outputs and gradients (op-by-op, the fused engine's VJP took a minute a case)."""

  def loss(params, xs, state):
    outputs, (h, c) = lstm(params, xs, initial_state=state, engine=engine, **kwargs)
    return jnp.sum(outputs * upstream) + jnp.sum(h) + jnp.sum(c), (outputs, (h, c))

  grads, outputs = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, state)
  return outputs, grads


@functools.cache
def _scan_nonfinite(where: str, value: float):
  """scan's outputs and gradients for `_nonfinite_case`, once for all the engines compared to it."""
  return _outputs_and_grads("scan", *_nonfinite_case(where, value))


def _assert_same_nonfinite(actual, expected, rtol=1e-5, atol=1e-5):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg="NaN in other places than scan's")
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e))
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e))
    finite = np.isfinite(e)
    np.testing.assert_allclose(a[finite], e[finite], rtol=rtol, atol=atol)


WHERE = ["input", "kernel", "recurrent_kernel", "bias", "state", "upstream"]


@pytest.mark.parametrize("engine", ENGINES[1:])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", WHERE)
def test_nan_and_inf_flow_as_in_scan(engine, where, value):
  case = _nonfinite_case(where, value)
  expected = _scan_nonfinite(where, value)
  if np.isnan(value):
    assert any(np.any(np.isnan(np.asarray(x))) for x in jax.tree.leaves(expected))
  _assert_same_nonfinite(_outputs_and_grads(engine, *case), expected)


@pytest.mark.parametrize("engine", ENGINES[1:])
@pytest.mark.parametrize("where", ["input", "upstream"])
def test_nan_flows_as_in_scan_with_masks_and_dropout(engine, where):
  params, xs, state, upstream = _nonfinite_case(where, np.nan, seed=3)
  keys = jax.random.split(jax.random.key(9), 3)
  kwargs = dict(
    lengths=jnp.array([6, 3, 5, 1, 6]),  # the NaN input sits at an unmasked step (row 1, step 2)
    input_dropout_mask=jax.random.bernoulli(keys[1], 0.8, (5, 4)) / 0.8,
    recurrent_dropout_mask=jax.random.bernoulli(keys[2], 0.8, (5, 20)) / 0.8,
  )
  mask = jnp.arange(6)[None, :] < kwargs["lengths"][:, None]

  def at_steps_run(result):
    # A masked step's input does not reach the outputs: the engines give it a zero gradient, while
    # autodiff through scan's jnp.where multiplies the zero cotangent by the NaN slope of that step.
    outputs, (d_params, d_xs, d_state) = result
    return outputs, (d_params, jnp.where(mask[..., None], d_xs, 0.0), d_state)

  expected = at_steps_run(_outputs_and_grads("scan", params, xs, state, upstream, **kwargs))
  actual = at_steps_run(_outputs_and_grads(engine, params, xs, state, upstream, **kwargs))
  _assert_same_nonfinite(actual, expected)


@CPU_ONLY
@pytest.mark.parametrize("where", ["input", "kernel", "recurrent_kernel", "upstream"])
def test_cpu_kernel_bf16_products_keep_nan_where_scan_has_it(where):
  from seqclf.rnn.engines import cpu_kernel

  if not cpu_kernel.has_bf16_products():
    pytest.skip("this CPU has no AVX512-BF16")
  case = _nonfinite_case(where, np.nan)
  expected = _outputs_and_grads("scan", *case)
  actual = _outputs_and_grads("cpu_kernel", *case, matmul_precision="bfloat16")
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.isnan(np.asarray(a)), np.isnan(np.asarray(e)))


@CPU_ONLY
def test_cpu_kernel_bf16_weight_rounding_keeps_every_nan_a_nan():
  """A NaN whose payload is all ones, or only its lowest bit, must not round to zero or infinity."""
  from seqclf.rnn.engines import cpu_kernel

  if not cpu_kernel.has_bf16_products():
    pytest.skip("this CPU has no AVX512-BF16")
  params, xs, state, _ = _nonfinite_case("input", 0.0)
  for bits in (0xFFFFFFFF, 0x7F800001, 0xFF800001):
    odd_nan = np.array(bits, np.uint32).view(np.float32)
    bad = {**params, "recurrent_kernel": params["recurrent_kernel"].at[4, 45].set(odd_nan)}
    outputs, _ = lstm(bad, xs, initial_state=state, engine="cpu_kernel", matmul_precision="bfloat16")
    assert np.isnan(np.asarray(outputs)[:, 1:]).any(), hex(bits)


# --- the C++ handlers, called directly ----------------------------------------------------------------


def _forward_buffers(batch=3, steps=4, input_size=5, hidden=6):
  return [
    jnp.zeros((batch, steps, input_size)),
    jnp.zeros((input_size + hidden, 4 * hidden)),
    jnp.zeros((4 * hidden,)),
    jnp.zeros((batch, hidden)),
    jnp.zeros((batch, hidden)),
    jnp.ones((batch, steps), bool),
    jnp.ones((batch, input_size)),
    jnp.ones((batch, hidden)),
  ]


def _call_forward(buffers, outputs):
  from seqclf.rnn.engines import cpu_kernel

  cpu_kernel._register()
  types = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in outputs]
  return jax.ffi.ffi_call("seqclf_lstm_forward", types)(*buffers, num_threads=np.int64(2), bf16=False)


@CPU_ONLY
def test_the_kernel_runs_buffers_that_fit():
  hs, cs, gates = _call_forward(_forward_buffers(), [(3, 4, 6), (3, 4, 6), (3, 4, 24)])
  assert np.all(np.isfinite(hs)) and gates.shape == (3, 4, 24)


FFI_MISMATCHES = {
  # argument index -> a buffer that disagrees with xs [3, 4, 5] and h0 [3, 6]
  "narrower weights (the old segfault)": (1, jnp.zeros((9, 24)), "weights is [9, 24], expected [11, 24]"),
  "wider weights (silently dropped features)": (1, jnp.zeros((12, 24)), "weights is [12, 24]"),
  "short bias": (2, jnp.zeros((20,)), "bias is [20], expected [24]"),
  "c0 of another batch": (4, jnp.zeros((2, 6)), "c0 is [2, 6]"),
  "short step mask": (5, jnp.ones((3, 2), bool), "step_mask is [3, 2], expected [3, 4]"),
  "input dropout mask": (6, jnp.ones((3, 4)), "input_dropout_mask is [3, 4], expected [3, 5]"),
  "recurrent dropout mask": (7, jnp.ones((1, 6)), "recurrent_dropout_mask is [1, 6]"),
  "rank 2 xs": (0, jnp.zeros((3, 5)), "xs must be rank 3"),
}


@CPU_ONLY
@pytest.mark.parametrize("case", list(FFI_MISMATCHES))
def test_the_kernel_refuses_buffers_that_disagree(case):
  index, buffer, words = FFI_MISMATCHES[case]
  buffers = _forward_buffers()
  buffers[index] = buffer
  with pytest.raises(Exception, match=re.escape(words)):
    jax.block_until_ready(_call_forward(buffers, [(3, 4, 6), (3, 4, 6), (3, 4, 24)]))


@CPU_ONLY
def test_the_kernel_refuses_results_of_the_wrong_size():
  with pytest.raises(Exception, match=r"gates \(result\) is \[3, 4, 20\]"):
    jax.block_until_ready(_call_forward(_forward_buffers(), [(3, 4, 6), (3, 4, 6), (3, 4, 20)]))


@CPU_ONLY
def test_the_backward_kernel_refuses_buffers_that_disagree():
  from seqclf.rnn.engines import cpu_kernel

  cpu_kernel._register()
  xs, weights, _, h0, c0, mask, x_drop, h_drop = _forward_buffers()
  state = jnp.zeros((3, 4, 6))
  arguments = [xs, weights, h0, c0, mask, x_drop, h_drop, state, state, jnp.zeros((3, 4, 24)), state, h0, c0]
  arguments[10] = jnp.zeros((3, 2, 6))  # dhs with too few steps
  types = [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(3, 4, 5), (3, 6), (3, 6), (11, 24), (24,)]]
  with pytest.raises(Exception, match=r"seqclf_lstm_backward: dhs is \[3, 2, 6\]"):
    jax.block_until_ready(
      jax.ffi.ffi_call("seqclf_lstm_backward", types)(*arguments, num_threads=np.int64(1), bf16=False)
    )


# --- GPU kernels on a CPU -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["pallas", "mosaic", "cudnn"])
def test_a_gpu_engine_on_a_cpu_is_one_line_naming_the_gpu_and_the_cpu_engines(engine, monkeypatch):
  """pallas and mosaic ran in their interpreters without a word: a tiny epoch took 667 s instead of 1 s."""
  monkeypatch.delenv(engines.INTERPRET_ENV, raising=False)
  with pytest.raises(
    ConfigError, match=re.escape(f"LSTM engine {engine!r} needs a GPU and this process runs on cpu")
  ) as error:
    lstm(_params(), _xs(), engine=engine)
  assert "scan, fused, cpu_kernel" in str(error.value)
  assert (engines.INTERPRET_ENV in str(error.value)) == (engine != "cudnn")
  assert engine not in engines._engines_that_can(
    "cpu",
    cell="lstm",
    masks=None,
    input_dropout=False,
    recurrent_dropout=False,
    dtypes=(),
    matmul_precision="float32",
    recurrent_activation="sigmoid",
  )


def test_the_interpreter_runs_when_asked_for(monkeypatch):

  monkeypatch.setenv(engines.INTERPRET_ENV, "1")
  outputs, _ = lstm(_params(), _xs(), engine="pallas")
  np.testing.assert_allclose(outputs, lstm(_params(), _xs(), engine="scan")[0], rtol=1e-5, atol=1e-5)
  monkeypatch.setenv(engines.INTERPRET_ENV, "0")
  with pytest.raises(ConfigError, match="needs a GPU"):
    lstm(_params(), _xs(), engine="pallas")


@CPU_ONLY
def test_an_unwritable_kernel_cache_is_one_line_naming_the_fix(tmp_path, monkeypatch):
  """It was an OSError traceback, blamed on the run directory by seqclf.main."""
  from seqclf.rnn.engines import cpu_kernel

  (tmp_path / "file").write_text("")
  monkeypatch.setenv("SEQCLF_CACHE_DIR", str(tmp_path / "file" / "cache"))  # below a file: cannot exist
  with pytest.raises(
    ConfigError, match=r"cannot build its kernel into .*set \$SEQCLF_CACHE_DIR to a writable"
  ):
    cpu_kernel.build_library()

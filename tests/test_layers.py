"""The reusable Linen layers `Bidirectional` and `Stacked`, and the sequence plumbing under them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqclf.errors import ConfigError
from seqclf.rnn import LSTM, Bidirectional, Stacked, sequences

RTOL, ATOL = 1e-5, 1e-6
LENGTHS = [5, 2, 8]
STEPS = 8


def _sequences(features=4):
  return [jax.random.normal(jax.random.key(10 + i), (n, features)) for i, n in enumerate(LENGTHS)]


def _padded(seqs, side):
  """[B, T, E] with each sequence padded on ``side`` by a value no LSTM should see, and its mask."""
  pad = lambda s: ((0, STEPS - len(s)), (0, 0)) if side == "right" else ((STEPS - len(s), 0), (0, 0))
  xs = jnp.stack([jnp.pad(s, pad(s), constant_values=7.0) for s in seqs])
  lengths = jnp.array(LENGTHS)
  steps = jnp.arange(STEPS)[None]
  mask = steps < lengths[:, None] if side == "right" else steps >= (STEPS - lengths)[:, None]
  return xs, mask


def test_reverse_within_lengths_keeps_padding_in_place_and_undoes_itself():
  xs = jnp.arange(3 * 5).reshape(3, 5, 1)
  lengths = jnp.array([5, 2, 0])
  reversed_ = sequences.reverse(xs, lengths)
  np.testing.assert_array_equal(reversed_[0, :, 0], xs[0, ::-1, 0])
  np.testing.assert_array_equal(reversed_[1, :, 0], [6, 5, 7, 8, 9])
  np.testing.assert_array_equal(reversed_[2], xs[2])
  np.testing.assert_array_equal(sequences.reverse(reversed_, lengths), xs)
  np.testing.assert_array_equal(sequences.reverse(xs), xs[:, ::-1])


def _bidirectional():
  return Bidirectional(LSTM(6, engine="fused"), LSTM(3, engine="fused"))


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_gives_each_sequence_what_it_gives_alone(side):
  """Padded on either side, given as a mask (or as lengths when right-padded): each row's final states
  and its outputs at its own steps are those of the sequence run alone, forward and reversed."""
  seqs = _sequences()
  xs, mask = _padded(seqs, side)
  layer = _bidirectional()
  params = layer.init(jax.random.key(0), xs)["params"]
  assert set(params) == {"forward", "backward"}
  runs = [layer.apply({"params": params}, xs, mask=mask)]
  if side == "right":
    runs.append(layer.apply({"params": params}, xs, lengths=jnp.array(LENGTHS)))
  for outputs, ((h, c), (back_h, back_c)) in runs:
    assert outputs.shape == (3, STEPS, 9)
    for row, seq in enumerate(seqs):
      alone, ((h1, c1), (back_h1, back_c1)) = layer.apply({"params": params}, seq[None])
      for actual, expected in (
        (h[row], h1[0]),
        (c[row], c1[0]),
        (back_h[row], back_h1[0]),
        (back_c[row], back_c1[0]),
      ):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)
      np.testing.assert_allclose(outputs[row][mask[row]], alone[0], rtol=RTOL, atol=ATOL)


def test_bidirectional_backward_half_reads_the_sequence_reversed():
  xs = jax.random.normal(jax.random.key(1), (2, 5, 4))
  layer = _bidirectional()
  params = layer.init(jax.random.key(0), xs)["params"]
  outputs, (_, back_state) = layer.apply({"params": params}, xs)
  back_outputs, expected_state = LSTM(3, engine="scan").apply({"params": params["backward"]}, xs[:, ::-1])
  np.testing.assert_allclose(outputs[..., 6:], back_outputs[:, ::-1], rtol=RTOL, atol=ATOL)
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), back_state, expected_state
  )


def test_stacked_runs_each_layer_on_the_outputs_of_the_last():
  xs = jax.random.normal(jax.random.key(2), (2, 5, 4))
  layer = Stacked([_bidirectional(), LSTM(7, engine="fused")])
  params = layer.init(jax.random.key(0), xs)["params"]
  assert set(params) == {"layers_0", "layers_1"}
  first, _ = _bidirectional().apply({"params": params["layers_0"]}, xs)
  expected = LSTM(7, engine="scan").apply({"params": params["layers_1"]}, first)
  actual = layer.apply({"params": params}, xs)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), actual, expected)


def test_dropout_reaches_every_layer_of_a_stack():
  xs = jax.random.normal(jax.random.key(3), (2, 5, 4))
  layer = Stacked([LSTM(3, recurrent_dropout=0.5), LSTM(3, recurrent_dropout=0.5)])
  params = layer.init(jax.random.key(0), xs)["params"]
  plain = layer.apply({"params": params}, xs)[1][0]
  run = lambda seed: layer.apply(
    {"params": params}, xs, deterministic=False, rngs={"dropout": jax.random.key(seed)}
  )[1][0]
  np.testing.assert_array_equal(run(1), run(1))
  assert not np.allclose(run(1), plain) and not np.allclose(run(1), run(2))


def _final_only(layer):
  """``layer`` (an LSTM or a Bidirectional pair of them) with return_sequences=False."""
  if isinstance(layer, Bidirectional):
    return layer.clone(forward=_final_only(layer.forward), backward=_final_only(layer.backward))
  return layer.clone(return_sequences=False)


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_with_return_sequences_false_gives_both_final_hs(side):
  """Each direction's final h, concatenated: the full run's final states, however the rows are padded."""
  xs, mask = _padded(_sequences(), side)
  layer = _bidirectional()
  params = layer.init(jax.random.key(0), xs)["params"]
  final = _final_only(layer)
  assert layer.return_sequences and not final.return_sequences
  paddings = [{"mask": mask}] + ([{"lengths": jnp.array(LENGTHS)}] if side == "right" else [])
  for padding in paddings:
    _, state = layer.apply({"params": params}, xs, **padding)
    outputs, final_state = final.apply({"params": params}, xs, **padding)
    assert outputs.shape == (3, 9)
    (forward_h, _), (backward_h, _) = final_state
    np.testing.assert_array_equal(outputs, jnp.concatenate([forward_h, backward_h], axis=-1))
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), final_state, state)


def test_a_stack_may_end_in_return_sequences_false_only():
  xs = jax.random.normal(jax.random.key(2), (2, 5, 4))
  layer = Stacked([_bidirectional(), LSTM(7, engine="fused")])
  params = layer.init(jax.random.key(0), xs)["params"]
  _, (h, c) = layer.apply({"params": params}, xs)
  final = Stacked([_bidirectional(), LSTM(7, engine="fused", return_sequences=False)])
  outputs, final_state = final.apply({"params": params}, xs)
  np.testing.assert_array_equal(outputs, final_state[0])
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL), final_state, (h, c))
  for refused, depth in (
    (Stacked([_final_only(_bidirectional()), LSTM(7)]), 0),
    (Stacked([LSTM(3), final, LSTM(2)]), 1),
  ):
    with pytest.raises(
      ConfigError, match=f"layer {depth} of a stack has return_sequences=False, .*last layer only"
    ):
      refused.init(jax.random.key(0), xs)


def test_bidirectional_refuses_directions_that_disagree_on_return_sequences():
  xs = jax.random.normal(jax.random.key(2), (2, 5, 4))
  layer = Bidirectional(LSTM(3), LSTM(3, return_sequences=False))
  with pytest.raises(ConfigError, match="give both the same return_sequences"):
    layer.init(jax.random.key(0), xs)

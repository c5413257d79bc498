"""Random LSTM inputs for the GPU kernel tests (``pallas``, ``mosaic``), shared so both engines are held to
the same cases: parameters with a non-zero bias, inputs, a non-zero initial state, step masks (none,
random holes with one row fully masked, left padding), per-sequence dropout masks and loss weights."""

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.rnn import api


def step_mask(kind, batch, steps, rng):
  """[B, T] bool: all True (None), random holes with the last row fully masked, or left padding."""
  if kind is None:
    return np.ones((batch, steps), bool)
  if kind == "random":
    mask = rng.random((batch, steps)) < 0.7
    mask[-1] = False
    return mask
  assert kind == "left"
  lengths = rng.integers(0, steps + 1, batch)
  return np.arange(steps)[None, :] >= (steps - lengths)[:, None]


def random_inputs(batch, steps, input_size, hidden, mask_kind=None, dropout=False, seed=0):
  """A dict of ``params, xs, h0, c0, mask``, the dropout masks (None without ``dropout``) and
  ``loss_weights`` (for outputs, h and c): the keywords of `seqclf.rnn.lstm` and what a test's loss
  mixes."""
  rng = np.random.default_rng(seed)
  params = api.init_params(jax.random.key(seed), input_size, hidden)
  params["bias"] = params["bias"] + jnp.asarray(rng.normal(0, 0.3, 4 * hidden), jnp.float32)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  def dropout_mask(*shape):
    return jnp.asarray((rng.random(shape) < 0.7) / 0.7, jnp.float32) if dropout else None

  return dict(
    params=params,
    xs=normal(batch, steps, input_size),
    h0=normal(batch, hidden),
    c0=normal(batch, hidden),
    mask=jnp.asarray(step_mask(mask_kind, batch, steps, rng)),
    input_dropout_mask=dropout_mask(batch, input_size),
    recurrent_dropout_mask=dropout_mask(batch, hidden),
    loss_weights=(normal(batch, steps, hidden), normal(batch, hidden), normal(batch, hidden)),
  )

"""`LSTM`, the Flax module over `seqclf.lstm.api.lstm`, with Keras' initialisation and dropout."""

import flax.linen as nn
import jax

from seqclf.errors import ConfigError
from seqclf.lstm import api


def _dropout_mask(rng, rate: float, shape, dtype):
  keep = jax.random.bernoulli(rng, 1.0 - rate, shape)
  return keep.astype(dtype) / (1.0 - rate)


class LSTM(nn.Module):
  """An LSTM layer. ``__call__(xs [B, T, E], mask=None, deterministic=True) -> (outputs, (h, c))``.

  Attributes:
    features: hidden size H.
    engine: LSTM engine name (see `seqclf.lstm.api.ENGINES`) or "auto".
    input_dropout: rate of Keras' ``dropout``: one input mask per sequence, reused at every step.
    recurrent_dropout: rate of Keras' ``recurrent_dropout``: one mask on ``h`` per sequence.

  Dropout needs the ``"dropout"`` RNG when ``deterministic=False``. Parameters are named as in
  `seqclf.lstm.api` (``kernel``, ``recurrent_kernel``, ``bias``), so ``variables["params"]`` of this module
  can be passed to `seqclf.lstm.lstm` directly.
  """

  features: int
  engine: str = "auto"
  input_dropout: float = 0.0
  recurrent_dropout: float = 0.0

  @nn.compact
  def __call__(self, xs, mask=None, deterministic: bool = True):
    batch, _, input_size = xs.shape
    params = {
      "kernel": self.param("kernel", api.kernel_init, (input_size, 4 * self.features)),
      "recurrent_kernel": self.param(
        "recurrent_kernel", api.recurrent_kernel_init, (self.features, 4 * self.features)
      ),
      "bias": self.param("bias", api.bias_init, (4 * self.features,)),
    }
    if self.recurrent_dropout > 0 and self.engine == "cudnn":
      raise ConfigError(
        "the cudnn engine has no recurrent dropout; use engine 'pallas' or 'fused' for "
        "a model with recurrent_dropout"
      )
    input_mask = recurrent_mask = None
    if not deterministic and self.input_dropout > 0:
      input_mask = _dropout_mask(self.make_rng("dropout"), self.input_dropout, (batch, input_size), xs.dtype)
    if not deterministic and self.recurrent_dropout > 0:
      recurrent_mask = _dropout_mask(
        self.make_rng("dropout"), self.recurrent_dropout, (batch, self.features), xs.dtype
      )
    return api.lstm(
      params,
      xs,
      mask=mask,
      input_dropout_mask=input_mask,
      recurrent_dropout_mask=recurrent_mask,
      engine=self.engine,
    )

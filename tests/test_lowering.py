"""Every platform an engine claims, checked here up to compilation: the article variants' whole train step
(forward, backward, Adam) lowered for each platform in the engine's `ENGINES` entry, on a CPU host.

What this proves: the program traces and lowers to StableHLO for that platform, including the engine's
kernels (Triton IR for Pallas on "gpu", the FFI call for cpu_kernel), with the engine "auto" and the
kernels' interpret mode following the platform being lowered for (`seqclf.lowering`). What it cannot:
that the backend compiler accepts it, that it runs, and the numbers it gives; that takes a device
(`benchmarks/gpu_check.sh`).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from seqclf import lowering, models, train
from seqclf.errors import ConfigError
from seqclf.rnn import engines

# The article's shapes: a batch of 64 reviews of 500 words from a vocabulary of 5000.
BATCH, MAXLEN, VOCAB = 64, 500, 5000

# Engines whose tracing for a platform needs that platform's runtime in this process: cudnn's shape rule
# asks the CUDA plugin (and through it cuDNN) for workspace sizes, so off a GPU it cannot be traced.
NEEDS_THE_DEVICE = {("cudnn", "gpu")}

CLAIMS = [
  (engine, platform) for engine, spec in engines.engines_of("lstm").items() for platform in spec.platforms
]


def lower_train_step(variant: str, engine: str, platform: str) -> jax.stages.Lowered:
  """The article's train step for ``variant`` with ``engine``, lowered for ``platform`` from shapes."""
  model = models.create(variant, vocab_size=VOCAB, engine=engine)
  config = ml_collections.ConfigDict({"learning_rate": 1e-3, "adam_eps": 1e-7, "grad_clip_norm": 0.0})

  def init_state():
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, MAXLEN), jnp.int32))["params"]
    return train.TrainState.create(apply_fn=model.apply, params=params, tx=train.make_optimizer(config))

  with lowering.targeting(platform):
    state = jax.eval_shape(init_state)
  batch = {
    "tokens": jax.ShapeDtypeStruct((BATCH, MAXLEN), jnp.int32),
    "labels": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
    "weights": jax.ShapeDtypeStruct((BATCH,), jnp.float32),
  }
  dropout_key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  return lowering.lower(jax.jit(train.make_train_step(model)), state, batch, dropout_key, platform=platform)


def _uses_lstm_dropout(variant: str) -> bool:
  fields = models.VARIANTS[variant]
  return bool(fields.get("lstm_input_dropout") or fields.get("lstm_recurrent_dropout"))


@pytest.mark.parametrize("variant", list(models.VARIANTS))
@pytest.mark.parametrize("engine, platform", CLAIMS)
def test_train_step_lowers_for_every_platform_the_engine_claims(engine, platform, variant):
  if models.VARIANTS[variant].get("cell") == "gru" and engine not in engines.engines_of("gru"):
    with pytest.raises(ConfigError, match=f"unknown GRU engine '{engine}' \\(it has no GRU; it runs LSTM\\)"):
      lower_train_step(variant, engine, platform)
    return
  with lowering.targeting(platform):
    unavailable = engines.unavailable_reason(engine, "lstm")
  if unavailable:  # e.g. mosaic on jax 0.10: lowered on the stacks that have it, refused by name here
    with pytest.raises(ConfigError, match=re.escape(unavailable)):
      lower_train_step(variant, engine, platform)
    return
  off_device = (engine, platform) in NEEDS_THE_DEVICE and jax.default_backend() != platform
  try:
    lowered = lower_train_step(variant, engine, platform)
  except ConfigError as error:
    # An engine may refuse what it cannot do (per-step dropout masks), by name; nothing else.
    assert _uses_lstm_dropout(variant) and engine in str(error), error
    return
  except (AttributeError, RuntimeError):
    if off_device:
      return
    raise
  assert not off_device, f"{engine} now lowers for {platform} without one: drop it from NEEDS_THE_DEVICE"
  text = lowered.as_text()
  assert "func.func public @main" in text
  if engine == "pallas" and platform == "gpu":
    assert "triton" in text.lower()  # the kernels themselves, not interpret mode's loops


def test_targeting_sets_the_platform_engines_see():
  assert lowering.target_platform() == jax.default_backend()
  with lowering.targeting("gpu"):
    assert lowering.target_platform() == "gpu"
    assert engines.check_engine("auto", cell="lstm") == engines.check_engine("auto", "gpu", cell="lstm")
  with lowering.targeting("tpu"):
    assert lowering.target_platform() == "tpu"
  assert lowering.target_platform() == jax.default_backend()
  with pytest.raises(ValueError, match="unknown platform"):
    with lowering.targeting("metal"):
      pass

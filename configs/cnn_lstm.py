"""The article's `cnn_lstm` variant alone (see seqclf.models.VARIANTS for what it adds)."""

from configs import default


def get_config():
  config = default.get_config()
  config.variants = "cnn_lstm"
  return config

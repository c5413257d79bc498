"""The article's `lstm_dropout` variant alone (see seqclf.models.VARIANTS for what it adds)."""

from configs import default


def get_config():
  config = default.get_config()
  config.variants = "lstm_dropout"
  return config

"""`seqclf.main` training the article's `lstm_recurrent_dropout` variant (see seqclf.models.VARIANTS for what it adds)."""

from seqclf.configs import run


def get_config():
  config = run.get_config()
  config.variant = "lstm_recurrent_dropout"
  return config

"""`seqclf.main` training the article's `lstm` variant (see seqclf.models.VARIANTS for what it adds)."""

from seqclf.configs import run


def get_config():
  config = run.get_config()
  config.variant = "lstm"
  return config

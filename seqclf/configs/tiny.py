"""A tiny `seqclf.main` config for tests and smoke runs: small vocabulary, short reviews, small LSTM, one
epoch (``seqclf/configs/article_tiny.py`` is the same for the article driver)."""

from seqclf.configs import run


def shrink(config):
  """``config`` with the tiny sizes."""
  config.top_words = 60
  config.maxlen = 24
  config.model.embed_dim = 8
  config.model.lstm_features = 12
  config.batch_size = 4
  config.eval_batch_size = 8
  config.epochs = 1
  return config


def get_config():
  return shrink(run.get_config())

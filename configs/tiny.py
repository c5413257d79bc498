"""A tiny config for tests and smoke runs: small vocabulary, short reviews, small LSTM, one epoch."""

from configs import default


def get_config():
  config = default.get_config()
  config.top_words = 60
  config.maxlen = 24
  config.model.embed_dim = 8
  config.model.lstm_features = 12
  config.batch_size = 4
  config.eval_batch_size = 8
  config.epochs = 1
  return config

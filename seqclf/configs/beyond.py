"""Beyond the article: a larger vocabulary, a bidirectional masked LSTM on length buckets, chosen on a
validation split carved from train (never on test), with early stopping.

  python -m seqclf.main --config=beyond --workdir=runs/beyond_seed0 --seed=0 --imdb=$SEQCLF_IMDB

The held-out test split is scored once, with the checkpoint the validation split chose.
"""

from seqclf.configs import run


def get_config():
  config = run.get_config()
  config.top_words = 20000
  config.model.embed_dim = 64
  config.model.lstm_features = 64
  config.model.bidirectional = True
  config.num_buckets = 6
  config.val_fraction = 0.1
  config.patience = 1
  config.epochs = 4
  return config

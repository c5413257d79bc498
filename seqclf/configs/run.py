"""`seqclf.main`: one model of the article's setup trained into a run directory.

python -m seqclf.main --config=seqclf/configs/run.py --workdir=runs/imdb_lstm --config.val_fraction=0.1
"""

from seqclf.configs import default


def get_config():
  config = default.get_config()
  config.variant = "lstm"  # a key of seqclf.models.VARIANTS
  # Share of train held out for validation (it then ranks checkpoints and drives early stopping), and
  # epochs without a better validation accuracy before stopping (0: never stop early).
  config.val_fraction = 0.0
  config.patience = 0
  config.pretrained_embeddings = ""  # a word2vec/GloVe text file initialising the embedding
  return config

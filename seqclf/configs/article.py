"""`seqclf/benchmarks/article.py`: the article's setup, each variant trained with three seeds.

Three seeds because one 3-epoch run swings by about ±2 points of test accuracy; ``--seeds=0`` is the quick
one-seed run.
"""

from seqclf.configs import default


def get_config():
  config = default.get_config()
  config.variants = "article"  # "article" (its four LSTMs), "all", or a list of seqclf.models.VARIANTS
  config.seeds = "0,1,2"  # one run per variant and seed
  return config

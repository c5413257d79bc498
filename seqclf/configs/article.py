"""`seqclf/benchmarks/article.py`: the article's setup, each variant trained with three seeds.

Three seeds because one 3-epoch run swings by about ±2 points of test accuracy; ``--seeds=0`` is the quick
one-seed run.
"""

from seqclf.configs import default


def get_config():
  config = default.get_config()
  config.variants = "all"  # "all" or a comma-separated list of seqclf.models.VARIANTS
  config.seeds = "0,1,2"  # one run per variant and seed
  return config

"""A tiny `seqclf/benchmarks/article.py` config for tests and smoke runs: ``seqclf/configs/tiny.py``'s sizes, one seed."""

from seqclf.configs import article, tiny


def get_config():
  config = tiny.shrink(article.get_config())
  config.seeds = "0"
  return config

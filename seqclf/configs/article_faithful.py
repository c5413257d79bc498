"""The article's own Keras 1.1 settings for `seqclf.benchmarks.article`, where they differ from the default.

The default setup (``seqclf/configs/default.py``) is what Keras 2+ and PyTorch do today. The article ran Keras
1.1, whose LSTM gates were ``hard_sigmoid`` (its ``inner_activation``: clip(0.2 x + 0.5, 0, 1)) and whose
Adam epsilon was 1e-8 (Keras 2+ uses 1e-7). The rest is already the article's: embedding init
uniform(-0.05, 0.05), glorot-uniform kernels, orthogonal recurrent kernel, forget-gate bias 1, Adam at
1e-3, batch 64, 3 epochs. The C++ kernel has sigmoid gates only, so ``auto`` trains these with ``fused``
(``seqclf.rnn.engines.ENGINES`` lists which engines have ``hard_sigmoid``).

  python -m seqclf.benchmarks.article --config=article_faithful --variants=lstm --seeds=0,1,2
"""

from seqclf.configs import article


def get_config():
  config = article.get_config()
  config.model.recurrent_activation = "hard_sigmoid"
  config.adam_eps = 1e-8
  return config

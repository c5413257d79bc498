"""The article's training setup: top 5000 words, reviews cut/padded to 500 at the front, batch 64, Adam,
3 epochs. What `seqclf.train` reads, shared by every driver; each driver's own config file adds the fields
only that driver reads (``seqclf/configs/article.py``, ``seqclf/configs/run.py``).

Every field can be overridden on the command line, e.g. ``--config.epochs=5 --config.model.engine=scan``.
"""

import ml_collections
from ml_collections import config_dict

# The dropout rates a variant sets (seqclf.models.VARIANTS); None keeps the variant's value, a number
# replaces it: --config.model.output_dropout=0.5.
DROPOUT_FIELDS = (
  "word_dropout",
  "embedding_dropout",
  "lstm_input_dropout",
  "lstm_recurrent_dropout",
  "output_dropout",
)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data (Keras imdb.load_data + pad_sequences).
  config.top_words = 5000
  config.maxlen = 500
  config.padding = "pre"
  config.truncating = "pre"

  # Base model sizes; each variant adds its own dropout / convolution fields (seqclf.models.VARIANTS).
  config.model = ml_collections.ConfigDict()
  config.model.embed_dim = 32
  config.model.lstm_features = 100
  config.model.engine = "auto"
  config.model.matmul_precision = "float32"  # of the LSTM's recurrent matmul (seqclf.rnn.lstm)
  # The LSTM's gate activation: "sigmoid" (Keras 2+ and PyTorch) or "hard_sigmoid" (Keras 1's, the
  # article's: configs/article_faithful.py); engines that lack it are refused (seqclf.rnn.engines.ENGINES).
  config.model.recurrent_activation = "sigmoid"
  config.model.lstm_layers = 1
  config.model.bidirectional = False
  config.model.freeze_embedding = False
  for field in DROPOUT_FIELDS:
    config.model[field] = config_dict.placeholder(float)

  # Training.
  config.batch_size = 64
  config.eval_batch_size = 250
  config.epochs = 3
  config.learning_rate = 1e-3
  config.adam_eps = 1e-7  # Keras' default epsilon (optax's is 1e-8)
  config.grad_clip_norm = 0.0  # 0: no clipping

  # How epochs are fed (seqclf/train.py). The article reads padding like any token; mask=True makes
  # the LSTM skip it. num_buckets > 0 groups reviews by length into that many padded lengths (<= 8)
  # and implies the mask. device_resident keeps the data on the device(s) and runs
  # steps_per_dispatch steps (0: the whole epoch) per jitted call.
  config.mask = False
  config.num_buckets = 0
  config.device_resident = False
  config.steps_per_dispatch = 0
  return config

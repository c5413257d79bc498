"""The IMDB data pipeline: archive → texts → word ids → disk cache.

``load_imdb`` reads the labelled reviews from an aclImdb archive, directory or the prepared tfds dataset
(``imdb.local_source`` first downloads an archive URL, checksummed, into the cache);
``tokenize``, ``Vocabulary`` and ``encode`` turn them into padded arrays of Keras-compatible word ids; and
``load_encoded`` does all of it once per source and options, caching the arrays on disk.
"""

from seqclf.data.cache import EncodedDataset, load_encoded
from seqclf.data.encoding import Vocabulary, encode, tokenize
from seqclf.data.imdb import TextDataset, TextSplit, load_imdb

__all__ = [
  "EncodedDataset",
  "TextDataset",
  "TextSplit",
  "Vocabulary",
  "encode",
  "load_encoded",
  "load_imdb",
  "tokenize",
]

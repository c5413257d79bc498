"""seqclf.imdb_flags: the shared --imdb/--imdb_sha256/--cache_dir flags and the data they choose."""

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from seqclf import imdb_flags
from seqclf.configs import default
from seqclf.data import load_encoded
from seqclf.errors import ConfigError

imdb_flags.define_flags()  # as the drivers that train on IMDB do


@pytest.fixture
def command_line():
  """Parses absl's flags from a command line of the given flags; restores them afterwards."""

  def parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["test", *args])

  with flagsaver.flagsaver():
    yield parse
  flags.FLAGS.unparse_flags()


def _small_config():
  """A small vocabulary and length, and the padding not the default, so that `load` must pass them on."""
  config = default.get_config()
  config.top_words, config.maxlen, config.padding, config.truncating = 50, 20, "post", "post"
  return config


def test_load_reads_the_archive_and_the_cache_the_flags_name(command_line, tiny_aclimdb_archive, tmp_path):
  command_line(f"--imdb={tiny_aclimdb_archive}", f"--cache_dir={tmp_path / 'cache'}")
  loaded = imdb_flags.load(_small_config())
  expected = load_encoded(
    str(tiny_aclimdb_archive),
    top_words=50,
    maxlen=20,
    padding="post",
    truncating="post",
    cache_dir=str(tmp_path / "reference"),
  )
  np.testing.assert_array_equal(loaded.x_train, expected.x_train)
  np.testing.assert_array_equal(loaded.y_test, expected.y_test)
  assert loaded.x_train.shape[1] == 20
  assert any((tmp_path / "cache").iterdir()), "--cache_dir is where the encoded arrays were cached"


def test_sha256_for_a_local_archive_is_refused(command_line, tiny_aclimdb_archive, tmp_path):
  command_line(f"--imdb={tiny_aclimdb_archive}", "--imdb_sha256=" + "0" * 64, f"--cache_dir={tmp_path}")
  with pytest.raises(ConfigError, match="only applies to an http"):
    imdb_flags.load(_small_config())


def test_given_tells_whether_the_command_line_chose_the_data(command_line):
  command_line()
  assert not imdb_flags.given()
  command_line("--imdb_sha256=" + "0" * 64)
  assert imdb_flags.given()
  command_line("--imdb=x.tar.gz")
  assert imdb_flags.given()

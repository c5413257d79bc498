"""Optional dependencies, imported where a feature uses them.

seqclf's core (the LSTM, the models, training on a local archive or CSV) needs jax, flax, optax, orbax,
absl and ml-collections only. TensorFlow Datasets, tensorboardX and matplotlib are extras, so a user who
wants `seqclf.rnn` in another project, or a machine without them, never pays for (or fails on) their
import:

  tfds = optional.require("tensorflow_datasets", "tfds")
"""

import importlib
import importlib.util
import types

from seqclf.errors import ConfigError

# The pip package behind each optional module where the two names differ (for the error message).
_PACKAGE = {
  "tensorflow_datasets": "tensorflow-datasets",
  "importlib_resources": "importlib-resources",
  "array_record": "array-record",
}


def available(module_name: str) -> bool:
  """Whether ``module_name`` can be imported, without importing it."""
  try:
    return importlib.util.find_spec(module_name) is not None
  except (ImportError, ValueError):  # a parent package missing, or the module blocked with None
    return False


def require(module_name: str, extra: str, *, feature: str = "this") -> types.ModuleType:
  """Imports ``module_name`` or raises one `ConfigError` line naming the extra that installs it.

  ``feature`` names what needs the module in that line ("--imdb=tfds", "TensorBoard logs").

  Only a missing module (or one of its own missing dependencies) becomes the one-line error; any other
  failure while importing it is a bug to see in full, so it propagates.
  """
  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    package = _PACKAGE.get(module_name, module_name)
    missing = (
      f" ({e.name} is missing)" if e.name and e.name.split(".")[0] != module_name.split(".")[0] else ""
    )
    raise ConfigError(
      f"{feature} needs {package}{missing}, which is not installed; pip install 'seqclf[{extra}]'"
    ) from e

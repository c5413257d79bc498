"""The drivers' config files: where they live, what each driver needs in one, and its shortcut flags.

Every driver has one config (an ml_collections ``get_config()`` file under ``seqclf/configs/``) holding the fields
it reads: ``seqclf/configs/default.py`` is the article's training setup that all of them share, and a driver's
own file adds that driver's fields (``seqclf/configs/article.py``: ``variants``, ``seeds``; ``seqclf/configs/run.py``
for ``seqclf.main``: ``variant``, ``val_fraction``, ``patience``, ``pretrained_embeddings``). The files ship
with the package, and a driver takes one by name as well as by path (``--config=tiny``).

A few fields have a shortcut flag (``--epochs`` for ``--config.epochs``). The one rule: a shortcut given
on the command line sets its field; not given, the config's value stands; given together with its
``--config.*`` spelling, the command line is refused as ambiguous.
"""

import os

from absl import flags

from seqclf.errors import ConfigError

CONFIGS_DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The config file ``seqclf/configs/<name>.py``."""
  return os.path.join(CONFIGS_DIR, f"{name}.py")


def names() -> list[str]:
  """The packaged config names, each usable as ``--config=<name>``."""
  return sorted(
    name[:-3] for name in os.listdir(CONFIGS_DIR) if name.endswith(".py") and name != "__init__.py"
  )


def check_fields(config, fields: tuple[str, ...], driver: str, default_name: str) -> None:
  """Refuses a config that lacks a field the driver reads (another driver's config, most likely)."""
  missing = [field for field in fields if field not in config]
  if missing:
    raise ConfigError(
      f"the --config file has no {', '.join(missing)}: it is not a {driver} config; pass"
      f" --config={default_name} or a file built on it"
    )


def apply_shortcuts(config, shortcuts: dict[str, str]) -> None:
  """Sets ``config``'s fields from the shortcut flags given, by the rule in the module docstring.

  Args:
    config: The driver's config, unlocked.
    shortcuts: Shortcut flag name -> the dotted config field it sets (``{"engine": "model.engine"}``).
      A list flag's value is joined with commas.

  Raises:
    ConfigError: A shortcut and its ``--config.*`` spelling were both given.
  """
  for flag_name, field in shortcuts.items():
    flag = flags.FLAGS[flag_name]
    if not flag.present:
      continue
    override = f"config.{field}"  # ml_collections registers a flag per field overridden
    if override in flags.FLAGS and flags.FLAGS[override].present:
      raise ConfigError(f"--{flag_name} and --config.{field} set the same field: pass one of them")
    value = ",".join(flag.value) if isinstance(flag.value, list) else flag.value
    *parents, leaf = field.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value

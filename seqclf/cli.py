"""What every command-line driver shares: one-line errors with exit code 2, the config flag, common flags.

Bad input reaches a driver two ways, and both end in one ``error: ...`` line and exit code 2: while the
command line is parsed (absl flag values, the ``--config`` file and its ``--config.*`` overrides, which
ml_collections reads), and later as a `UsageError` raised by the library.
"""

import functools
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from seqclf import configs
from seqclf.errors import DamagedCheckpointError, Interrupted, UsageError


def define_flags() -> None:
  """Defines ``--verbose`` (full tracebacks instead of one line); `run` and `define_config` call it."""
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show full tracebacks for errors instead of one line.")


# Config flags defined through `define_config`: flag name -> default config file.
_CONFIG_DEFAULTS: dict[str, str] = {}


def define_config(default_path: str, name: str = "config"):
  """Defines ``--config`` (an ml_collections config file, locked) whose file is read by `run`'s parser.

  ml_collections parses a config flag's default, and the ``--config.*`` overrides with it, the moment the
  flag is defined (at import, outside any error handling) when ``--config`` is not on the command line;
  so the flag gets no default here, and `run` puts ``--config=default_path`` on the command line instead:
  one parse, inside the one-line error handling, with or without an explicit ``--config``.
  """
  define_flags()
  _CONFIG_DEFAULTS[name] = default_path
  help_string = (
    f"Config file (ml_collections get_config()), or the name of a packaged one ({', '.join(configs.names())});"
    f" default {os.path.splitext(os.path.basename(default_path))[0]}."
  )
  try:
    return config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  except flags.CantOpenFlagFileError:
    # ml_collections also reads the --flagfile files while defining; parsing names the missing one.
    return config_flags.DEFINE_config_file(name, None, help_string, lock_config=True, sys_argv=sys.argv[:1])


def _with_default_configs(argv: list[str]) -> list[str]:
  """``argv`` with ``--NAME=default`` first for every `define_config` flag the command line leaves out."""
  given = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)  # --flagfile contents count too
  added = [
    f"--{name}={path}"
    for name, path in _CONFIG_DEFAULTS.items()
    if not any(re.match(rf"^--?{re.escape(name)}(=|$)", arg) for arg in given)
  ]
  return [argv[0], *added, *argv[1:]]


def _with_packaged_configs(argv: list[str]) -> list[str]:
  """``argv`` with a bare config name (``--config=tiny``) replaced by the packaged file of that name.

  A value that is an existing path, or names no packaged config, is left for ml_collections to read.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    for name in _CONFIG_DEFAULTS:
      value = None
      if arg.startswith(f"--{name}="):
        value, prefix = arg.split("=", 1)[1], f"--{name}="
      elif arg == f"--{name}" and i + 1 < len(out):
        value, prefix, i = out[i + 1], "", i + 1
      if value and os.sep not in value and not os.path.exists(value) and os.path.exists(configs.path(value)):
        out[i] = prefix + configs.path(value)
  return out


def _one_line(message: str) -> str:
  """The first and the last line of a multi-line message (ml_collections puts a traceback in between)."""
  lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
  return lines[0] if len(lines) < 2 else f"{lines[0].rstrip(':')}: {lines[-1]}"


def _parse_error(error: Exception) -> str:
  """The one-line message for an exception raised while the command line (and config file) is parsed."""
  if isinstance(error, flags.Error):
    return _one_line(error).removeprefix("ERROR:: ")  # absl's prefix for an unreadable --flagfile
  if isinstance(error, SyntaxError):
    return (
      f"config file {error.filename} line {error.lineno}: {error.msg}; fix the file or pass another --config"
    )
  if isinstance(error, AttributeError) and getattr(error, "name", None) == "get_config":
    return f"{_config_path(error)} has no get_config(); a --config file must define get_config()"
  if isinstance(error, (KeyError, AttributeError)):  # how ml_collections reports --config.<unknown key>
    message = error
    while isinstance(message, BaseException) and message.args:  # AttributeError(KeyError(text))
      message = message.args[0]
    key, *hint = str(message).strip(chr(34)).splitlines()
    hint = f" ({' '.join(hint).strip()})" if hint else ""
    return f"unknown config key {key}{hint}; check the --config.* names against the config file"
  if isinstance(error, OSError):
    return _missing_config_message(error)
  return f"cannot parse the command line: {type(error).__name__}: {_one_line(error)}"


def _config_paths(argv: list[str]) -> set[str]:
  """The absolute paths of the config files ``argv`` names (``--config=FILE`` or ``--config FILE``)."""
  paths = set()
  for i, arg in enumerate(argv):
    for name in _CONFIG_DEFAULTS:
      if arg.startswith(f"--{name}="):
        paths.add(os.path.abspath(arg.split("=", 1)[1]))
      elif arg == f"--{name}" and i + 1 < len(argv):
        paths.add(os.path.abspath(argv[i + 1]))
  return paths


def _config_file_error(error: BaseException, paths: set[str]) -> str | None:
  """The one-line message for an exception a config file itself raised (its ``get_config()`` or its
  top level), naming the file and line; None when no frame of the error's chain ran in those files."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    traceback, line = error.__traceback__, None
    while traceback is not None:
      if os.path.abspath(traceback.tb_frame.f_code.co_filename) in paths:
        path, line = traceback.tb_frame.f_code.co_filename, traceback.tb_lineno
      traceback = traceback.tb_next
    if line is not None:
      return (
        f"config file {path} line {line} raised {type(error).__name__}: {_one_line(error)}; fix the file "
        "or pass another --config"
      )
    error = error.__cause__ or error.__context__
  return None


def _config_path(error: AttributeError) -> str:
  module = getattr(error, "obj", None)
  return f"config file {getattr(module, '__file__', None) or '(unknown)'}"


def _missing_config_message(error: OSError) -> str:
  # ml_collections' message lists each attempt; its last line is the OS error, naming the path.
  reason = str(error).strip().splitlines()[-1].strip()
  return (
    f"cannot load the config file ({reason}); pass an existing --config=FILE.py or the name of a packaged "
    f"config: {', '.join(configs.names())}"
  )


def _check_configs() -> None:
  """Raises what ml_collections defers: a config file that could not be read or whose get_config()
  returned None or another non-config (it hands back a placeholder, or the value, that fails on first
  use, deep inside the driver)."""
  for name in _CONFIG_DEFAULTS:
    config, filename = flags.FLAGS[name].value, flags.FLAGS[name].config_filename
    if config is None:
      raise UsageError(f"--{name}={filename}: get_config() returned None")
    try:
      config.keys()
    except OSError as e:
      raise UsageError(_missing_config_message(e)) from e
    except AttributeError as e:
      raise UsageError(
        f"--{name}={filename}: get_config() returned {type(config).__name__}, expected an ml_collections "
        "ConfigDict"
      ) from e


def _check_environment() -> None:
  """Refuses a bad environment variable before the driver starts, so nothing is created (a run directory,
  its lock) for a run that cannot go on, and a benchmark does not record the error in every row."""
  if "SEQCLF_LSTM_THREADS" in os.environ:
    # Imported only when the variable is set: it imports jax, which not every driver needs.
    from seqclf.rnn.engines import cpu_kernel

    cpu_kernel.default_num_threads()


def usage_errors_exit_2(main):
  """Wraps an absl ``main`` so a `UsageError` prints ``error: <message>`` and exits 2, and Ctrl-C (or an
  `Interrupted` saying what is saved) prints ``interrupted: ...`` and exits 130, no traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      _check_configs()
      _check_environment()
      return main(argv)
    except UsageError as e:
      if flags.FLAGS.get_flag_value("verbose", False):
        raise
      print(f"error: {e}", file=sys.stderr)
      if isinstance(e, DamagedCheckpointError):  # no teardown, in which abandoned reads would print
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
      sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as e:  # Ctrl-C: one line, and the shell's code for SIGINT
      if flags.FLAGS.verbose:
        raise
      newline = "\n" if sys.stderr.isatty() else ""  # off the progress line a terminal may be showing
      # str(): an exception is true even when its text is empty, as a bare KeyboardInterrupt's is.
      print(f"{newline}interrupted: {str(e) or 'stopped by the user'}", file=sys.stderr)
      sys.exit(130)

  return wrapped


def _driver_help(main, full: bool = False) -> str:
  """``--help``: the driver's docstring and the flags it and the seqclf modules it uses define; with
  ``full`` (``--helpfull``), every flag, absl's and the libraries' included."""
  module_name = main.__module__
  doc = (sys.modules[module_name].__doc__ or "").strip()
  by_module = flags.FLAGS.flags_by_module_dict()
  # absl files the flags of ``__main__`` (``python -m``) under the script's path.
  own = [module_name, sys.argv[0]] if module_name == "__main__" else [module_name]
  modules = [*own, *sorted(name for name in by_module if name.startswith("seqclf.") and name not in own)]
  label = getattr(sys.modules[module_name].__spec__, "name", module_name)  # -m: the module, not its path
  if full:
    sections, tail = [flags.FLAGS.get_help().strip()], ""
  else:
    sections = [flags.FLAGS.module_help(name) for name in modules if name in by_module]
    tail = "Every flag, absl's own included: --helpfull."
  sections = [section.replace(f"{sys.argv[0]}:", f"{label}:", 1) for section in sections]
  return "\n\n".join(part for part in (doc, "flags:", *sections, tail) if part)


def run(main, flags_parser=None):
  """`absl.app.run` with one-line errors for bad flags, config files and overrides too, and a ``--help``
  that lists the driver's flags (absl's own lists only those of ``__main__``, none for a console script)."""
  define_flags()

  def parse(argv):
    options = argv[1 : argv.index("--") if "--" in argv else None]
    if any(arg in ("--help", "-h", "-?", "--helpshort", "--helpfull") for arg in options):
      # absl's own --helpfull exits 1, as for an error.
      print(_driver_help(main, full="--helpfull" in options))
      sys.exit(0)
    # ml_collections logs a warning for a get_config() that returned None; the error line says it.
    logging.set_verbosity(logging.ERROR)
    full_argv = argv
    try:
      full_argv = _with_packaged_configs(_with_default_configs(argv))
      return flags.FLAGS(full_argv)
    except Exception as e:  # anything raised while parsing comes from the command line or config file
      if "--verbose" in argv:
        raise
      print(f"error: {_config_file_error(e, _config_paths(full_argv)) or _parse_error(e)}", file=sys.stderr)
      sys.exit(2)
    finally:
      logging.set_verbosity(logging.WARNING)

  app.run(usage_errors_exit_2(main), flags_parser=flags_parser or parse)


class _PositiveIntListParser(flags.ListParser):
  """Comma-separated positive integers, at least one (absl turns the ValueError into a flag error)."""

  def parse(self, argument):
    values = super().parse(argument)
    try:
      numbers = [int(value) for value in values]
    except ValueError:
      raise ValueError(f"takes comma-separated positive integers, got {argument!r}") from None
    if not numbers or min(numbers) < 1:
      raise ValueError(f"takes comma-separated positive integers (at least one), got {argument!r}")
    return numbers

  def flag_type(self):
    return "list of positive integers"


def define_positive_int_list(name: str, default: list[int] | None, help_string: str):
  """A flag like ``--batch_sizes=16,64``: its value is a list of positive ints, checked while parsing."""
  return flags.DEFINE(
    _PositiveIntListParser(),
    name,
    None if default is None else ",".join(map(str, default)),
    help_string,
    serializer=flags.CsvListSerializer(","),
    module_name=sys._getframe(1).f_globals["__name__"],  # listed under the driver in --help
  )


def require_no_arguments(argv: list[str]) -> None:
  """Refuses positional arguments (a driver that takes none would silently ignore them)."""
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}; every option is a --flag")

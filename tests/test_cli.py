"""`seqclf.cli`: every driver answers a bad command line with one ``error:`` line and exit code 2.

absl and ml_collections parse flag values, the ``--config`` file and its ``--config.*`` overrides
themselves; each case here once ended in a traceback (exit 1), a multi-line message, or a run that
ignored the value.
"""

import types

import pytest
from absl import flags

from seqclf import cli
from seqclf.errors import DamagedCheckpointError, DataError
from tests import drivers

CONFIG_DRIVERS = ("seqclf.benchmarks.article", "seqclf.main", "seqclf.benchmarks.scaling")
# Arguments each driver needs to get as far as the check (never as far as training).
NEEDS = {"seqclf.main": ["--workdir={tmp}/run"], "seqclf.predict": ["--workdir={tmp}/run", "a text"]}

CONFIG_FILES = {
  "no_get_config.py": "x = 1\n",
  "syntax_error.py": "def get_config(:\n",
  "raises.py": "def get_config():\n  raise ValueError('boom')\n",
  "returns_none.py": "def get_config():\n  return None\n",
  "returns_42.py": "def get_config():\n  return 42\n",
}

# (arguments, a fragment of the one error line); {tmp} is the test's directory with CONFIG_FILES.
CONFIG_CASES = [
  (["--config={tmp}/missing.py"], "cannot load the config file ([Errno 2] No such file"),
  (["--config={tmp}/missing.py", "--config.epochs=2"], "cannot load the config file"),
  (["--config={tmp}/no_get_config.py"], "no_get_config.py has no get_config()"),
  (["--config={tmp}/syntax_error.py"], "syntax_error.py line 1: invalid syntax"),
  (["--config={tmp}/raises.py"], "raises.py line 2 raised ValueError: boom; fix the file"),
  (["--config={tmp}/returns_none.py"], "get_config() returned None"),
  (["--config={tmp}/returns_42.py"], "get_config() returned int, expected an ml_collections ConfigDict"),
  # Without --config, ml_collections read these at import, before any error handling.
  (["--config.nope=1"], "unknown config key 'nope'"),
  (["--config.model.engin=scan"], "unknown config key 'engin' (Did you mean \"engine\""),
  (["--config.epochs=two"], "flag --config.epochs=two: invalid literal for int()"),
  (["--config.mask=maybe"], "flag --config.mask=maybe: ('Non-boolean argument"),
  (["--config.learning_rate=fast"], "could not convert string to float"),
  (["--config.model=5"], "Failed to parse '5' as a ConfigDict"),
]

FLAG_CASES = [
  ("seqclf.benchmarks.article", ["--epochs=abc"], "flag --epochs=abc: invalid literal for int()"),
  ("seqclf.benchmarks.article", ["--tensorboard=maybe"], "Non-boolean argument to boolean flag"),
  ("seqclf.benchmarks.article", ["--preset=fast"], "flag --preset=fast: value should be one of"),
  ("seqclf.benchmarks.article", ["--profile_steps=0"], "flag --profile_steps=0: 0 is not a positive integer"),
  ("seqclf.main", ["--seed=x"], "flag --seed=x"),
  *[
    (module, ["--profile_dir=/proc/x"], "flag --profile_dir=/proc/x: cannot write in /proc")
    for module in CONFIG_DRIVERS
  ],
  ("seqclf.main", ["--profile_dir={tmp}/raises.py/x"], "raises.py is a file, not a directory"),
  ("seqclf.main", ["--flagfile={tmp}/missing.flags"], "Unable to open flagfile"),
  (
    "seqclf.benchmarks.lstm_engines",
    ["--batch_sizes=16,a"],
    "--batch_sizes=16,a: takes comma-separated positive",
  ),
  ("seqclf.benchmarks.lstm_engines", ["--steps=0"], "--steps=0: takes comma-separated positive integers"),
  ("seqclf.benchmarks.lstm_engines", ["--hidden_sizes="], "--hidden_sizes=: takes comma-separated positive"),
  ("seqclf.benchmarks.lstm_engines", ["--repeats=0"], "flag --repeats=0: 0 is not a positive integer"),
  ("seqclf.benchmarks.lstm_engines", ["--input_size=0"], "flag --input_size=0: 0 is not a positive integer"),
  ("seqclf.benchmarks.lstm_engines", ["surplus"], "unexpected arguments: surplus"),
  ("seqclf.benchmarks.lstm_engines", ["--engines=pallas"], "--engines=pallas runs in interpret mode on cpu"),
  (
    "seqclf.benchmarks.scaling",
    ["--per_device_batch=0"],
    "--per_device_batch=0: takes comma-separated positive",
  ),
  ("seqclf.benchmarks.scaling", ["--device_counts=x"], "--device_counts=x: takes comma-separated positive"),
  ("seqclf.benchmarks.scaling", ["--repeats=0"], "flag --repeats=0: 0 is not a positive integer"),
  ("seqclf.benchmarks.scaling", ["--steps=-1"], "flag --steps=-1: -1 is not a positive integer"),
  ("seqclf.benchmarks.scaling", ["surplus"], "unexpected arguments: surplus"),
  (
    "seqclf.benchmarks.lstm_engines",
    ["--batch_sizes=99999999999", "--steps=1", "--hidden_sizes=1", "--engines=scan", "--workdir={tmp}/w"],
    "GiB available; lower --batch_sizes, --steps or --hidden_sizes",
  ),
  (
    "seqclf.benchmarks.scaling",
    ["--config=seqclf/configs/tiny.py", "--per_device_batch=999999999", "--workdir={tmp}/w"],
    "GiB available; lower --per_device_batch or --steps",
  ),
  (
    "seqclf.benchmarks.scaling",
    ["--config.num_buckets=4"],
    "--config.num_buckets and --config.device_resident",
  ),
  (
    "seqclf.benchmarks.compare",
    ["--allow_config_mismatch=x", "--out={tmp}/out", "{tmp}"],
    "Non-boolean argument",
  ),
  ("seqclf.predict", ["--which=worst"], "flag --which=worst: value should be one of <best|last>"),
  ("seqclf.predict", ["--json=maybe"], "Non-boolean argument to boolean flag"),
]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("configs")
  for name, text in CONFIG_FILES.items():
    (directory / name).write_text(text)
  return directory


def run_driver(module, args, tmp, run=drivers.run):
  return run(module, *[arg.format(tmp=tmp) for arg in [*args, *NEEDS.get(module, [])]], timeout=120)


def assert_one_error_line(result, fragment):
  assert result.returncode == 2, result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("error: ") and fragment in line, line


# Every case on seqclf.main; on the other config drivers the ones that escaped at import.
CONFIG_RUNS = [("seqclf.main", *case) for case in CONFIG_CASES] + [
  (module, *case) for module in CONFIG_DRIVERS[::2] for case in (CONFIG_CASES[0], CONFIG_CASES[7])
]


@pytest.mark.parametrize(
  "module,args,fragment", CONFIG_RUNS, ids=[f"{m} {' '.join(a)}" for m, a, _ in CONFIG_RUNS]
)
def test_bad_config_files_and_overrides_are_one_line(module, args, fragment, config_dir):
  assert_one_error_line(run_driver(module, args, config_dir), fragment)


@pytest.mark.parametrize(
  "module,args,fragment", FLAG_CASES, ids=[f"{m} {' '.join(a)}" for m, a, _ in FLAG_CASES]
)
def test_bad_flag_values_are_one_line(module, args, fragment, config_dir):
  assert_one_error_line(run_driver(module, args, config_dir), fragment)


@pytest.mark.parametrize("module", ["seqclf.main", "seqclf.benchmarks.lstm_engines"])
def test_a_bad_thread_count_is_refused_before_anything_is_created(module, tmp_path):
  """seqclf-lstm-engines exited 0 with the error in every row; seqclf-train left a run directory holding
  only its lock."""
  result = drivers.run(module, f"--workdir={tmp_path}/run", env={"SEQCLF_LSTM_THREADS": "abc"}, timeout=120)
  assert_one_error_line(result, "$SEQCLF_LSTM_THREADS must be a number of threads, got 'abc'")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["seqclf.main", "seqclf.predict", "seqclf.benchmarks.lstm_engines"])
def test_help_and_helpfull_print_the_flags_and_exit_0(module):
  """--helpfull, which --help points to, exited 1 after absl's listing."""
  short, full = (drivers.run(module, option, timeout=120) for option in ("--help", "--helpfull"))
  assert short.returncode == full.returncode == 0, (short.stderr, full.stderr)
  assert "--workdir" in short.stdout and "--helpfull" in short.stdout and "--flagfile" not in short.stdout
  assert "--workdir" in full.stdout and "--flagfile" in full.stdout  # absl's own flags too


def test_verbose_shows_the_traceback(config_dir):
  """In a new interpreter: the uncaught exception's traceback and exit code are the interpreter's own."""
  args = ["--config={tmp}/syntax_error.py", "--verbose"]
  result = run_driver("seqclf.main", args, config_dir, run=drivers.run_fresh)
  assert result.returncode == 1 and "Traceback" in result.stderr and "SyntaxError" in result.stderr


def test_the_default_config_goes_first_so_overrides_apply_to_it():
  cli._CONFIG_DEFAULTS["config"] = "seqclf/configs/default.py"  # as define_config records it
  try:
    argv = cli._with_default_configs(["prog", "--config.epochs=2"])
    assert argv == ["prog", "--config=seqclf/configs/default.py", "--config.epochs=2"]
    explicit = ["prog", "--config", "seqclf/configs/tiny.py", "--config.epochs=2"]
    assert cli._with_default_configs(explicit) == explicit
  finally:
    del cli._CONFIG_DEFAULTS["config"]


def test_positive_int_lists_parse_to_ints():
  values = flags.FlagValues()
  holder = flags.DEFINE(cli._PositiveIntListParser(), "sizes", "1,2", "sizes", flag_values=values)
  values(["prog", "--sizes=16, 64"])
  assert values["sizes"].value == [16, 64] and holder.name == "sizes"
  for bad in ("--sizes=", "--sizes=0", "--sizes=-3,4", "--sizes=1.5"):
    with pytest.raises(flags.IllegalFlagValueError, match="positive integers"):
      values(["prog", bad])


@pytest.mark.parametrize(("error", "ends_at_once"), [(DamagedCheckpointError, True), (DataError, False)])
def test_a_damaged_checkpoint_ends_the_process_right_after_its_line(capsys, monkeypatch, error, ends_at_once):
  """Reads of a damaged checkpoint may still be pending on TensorStore's threads, which printed tracebacks
  into a closed event loop at the interpreter's teardown in some runs: the driver skips the teardown."""
  monkeypatch.setattr(cli, "_check_configs", lambda: None)  # no driver's flags are parsed here
  monkeypatch.setattr(cli.flags, "FLAGS", types.SimpleNamespace(get_flag_value=lambda name, default: default))

  class Ended(Exception):
    pass

  def end(code):
    raise Ended(code)

  monkeypatch.setattr(cli.os, "_exit", end)

  def fails(argv):
    raise error("checkpoint 3 is damaged")

  with pytest.raises(Ended if ends_at_once else SystemExit) as exit_info:
    cli.usage_errors_exit_2(fails)(["driver"])
  assert exit_info.value.args[0] == 2 if ends_at_once else exit_info.value.code == 2
  assert capsys.readouterr().err == "error: checkpoint 3 is damaged\n"


def test_a_bare_ctrl_c_still_gives_a_reason(capsys, monkeypatch):
  """A KeyboardInterrupt has no text: the line read "interrupted: " and stopped there."""
  monkeypatch.setattr(cli, "_check_configs", lambda: None)  # no driver's flags are parsed here
  monkeypatch.setattr(cli.flags, "FLAGS", types.SimpleNamespace(verbose=False))

  def stopped(argv):
    raise KeyboardInterrupt

  with pytest.raises(SystemExit) as exit_info:
    cli.usage_errors_exit_2(stopped)(["driver"])
  assert exit_info.value.code == 130
  assert capsys.readouterr().err == "interrupted: stopped by the user\n"

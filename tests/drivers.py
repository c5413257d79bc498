"""A command-line driver run as its own process in a test: `run(module, *args)`, `run_fresh`.

A driver test checks what one process prints and the code it exits with for one command line; a new
interpreter per case would spend most of its time importing jax, Flax and orbax. `run` hands the command
line to a server per driver module (`tests.driver_server`) that imported the driver once and forks per
run, so each run is still its own process, with its own environment, working directory, output and exit
code. `run_fresh` starts a new interpreter: for what only a start shows (``python -m``, and environment
variables jax reads while it is imported, which a run whose ``JAX_*`` variables differ from the server's
gets automatically).
"""

import atexit
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

_servers: dict[str, subprocess.Popen] = {}


def interruptible() -> None:
  """A `subprocess.Popen` ``preexec_fn``: SIGINT as a terminal's Ctrl-C finds it. A shell starts a
  background job (``make test &``) with SIGINT ignored, its children inherit that, and Python then
  installs no KeyboardInterrupt handler, so a test's SIGINT would be lost."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _jax_variables(env: dict[str, str]) -> dict[str, str]:
  return {key: value for key, value in env.items() if key.startswith("JAX_")}


def _server(module: str) -> subprocess.Popen:
  server = _servers.get(module)
  if server is None or server.poll() is not None:
    server = subprocess.Popen(
      [sys.executable, "-m", "tests.driver_server", module],
      cwd=REPO,
      env=ENV,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      preexec_fn=interruptible,
    )
    _servers[module] = server
  return server


@atexit.register
def _stop_servers() -> None:
  for server in _servers.values():
    server.stdin.close()
    server.wait(timeout=30)


def _command(module: str, args, code) -> list[str]:
  return [sys.executable, *(["-c", code] if code is not None else ["-m", module]), *map(str, args)]


def run_fresh(
  module: str, *args, env=None, cwd=REPO, stdin=None, timeout=300, code=None
) -> subprocess.CompletedProcess:
  """``python -m module args`` in a new interpreter; ``env`` adds to the test environment, ``stdin`` is
  the text on its standard input; with ``code``, ``python -c code args`` (a test's script that patches,
  then runs the driver ``module``)."""
  return subprocess.run(
    _command(module, args, code),
    input=stdin or "",
    cwd=cwd,
    capture_output=True,
    text=True,
    env={**ENV, **(env or {})},
    timeout=timeout,
    preexec_fn=interruptible,
  )


def run(
  module: str, *args, env=None, cwd=REPO, stdin=None, timeout=300, code=None
) -> subprocess.CompletedProcess:
  """`run_fresh`, as a fork of the module's server."""
  env = {**ENV, **(env or {})}
  if _jax_variables(env) != _jax_variables(ENV):
    return run_fresh(module, *args, env=env, cwd=cwd, stdin=stdin, timeout=timeout, code=code)
  args = [str(arg) for arg in args]
  server = _server(module)
  with tempfile.TemporaryDirectory() as tmp:
    stdin_path = os.path.join(tmp, "stdin")
    pathlib.Path(stdin_path).write_text(stdin or "")
    request = {
      "argv": args,
      "code": code,
      "stdin": stdin_path,
      "env": env,
      "cwd": str(cwd),
      "stdout": os.path.join(tmp, "stdout"),
      "stderr": os.path.join(tmp, "stderr"),
      "timeout": timeout,
    }
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    reply = server.stdout.readline()
    if not reply:
      raise RuntimeError(f"the driver server for {module} died (exit code {server.wait()})")
    returncode = json.loads(reply)["returncode"]
    stdout, stderr = (
      pathlib.Path(request[name]).read_text(errors="replace") for name in ("stdout", "stderr")
    )
  return subprocess.CompletedProcess(_command(module, args, code), returncode, stdout, stderr)

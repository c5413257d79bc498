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
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

_servers: dict[str, subprocess.Popen] = {}


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
    )
    _servers[module] = server
  return server


@atexit.register
def _stop_servers() -> None:
  for server in _servers.values():
    server.stdin.close()
    server.wait(timeout=30)


def run_fresh(module: str, *args, env=None, cwd=REPO, stdin=None, timeout=300) -> subprocess.CompletedProcess:
  """``python -m module args`` in a new interpreter; ``env`` adds to the test environment, ``stdin`` is
  the text on its standard input."""
  return subprocess.run(
    [sys.executable, "-m", module, *map(str, args)],
    input=stdin or "",
    cwd=cwd,
    capture_output=True,
    text=True,
    env={**ENV, **(env or {})},
    timeout=timeout,
  )


def run(
  module: str, *args, env=None, cwd=REPO, stdin=None, timeout=300, code=None
) -> subprocess.CompletedProcess:
  """``python -m module args`` as a fork of the module's server, with `run_fresh`'s arguments; with
  ``code``, ``python -c code args`` there instead (a test's script that patches, then runs the driver)."""
  env = {**ENV, **(env or {})}
  if _jax_variables(env) != _jax_variables(ENV):
    if code is not None:
      return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env,
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=timeout,
      )
    return run_fresh(module, *args, env=env, cwd=cwd, stdin=stdin, timeout=timeout)
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
  command = [sys.executable, *(["-c", code] if code is not None else ["-m", module]), *args]
  return subprocess.CompletedProcess(command, returncode, stdout, stderr)

"""A driver module imported once, forked per command line: ``python -m tests.driver_server MODULE``.

Each request (one JSON line on stdin) runs ``MODULE.run()`` in a fork of this process, as
``python -m MODULE ARGS`` would run it (or the request's ``code``, as ``python -c CODE ARGS`` would): its own process, environment, working directory, stdout and
stderr files and exit code; only Python's and jax's imports are paid once instead of once a run. The
server itself never initialises a jax backend, so each fork starts from the state a new process has
after its imports. The reply is one JSON line, ``{"returncode": N}`` (``-9`` after the timeout).
"""

import importlib
import json
import os
import signal
import sys
import time
import traceback


def _exit_code(code) -> int:
  """`SystemExit.code` as the interpreter turns it into a process exit code."""
  if code is None:
    return 0
  if isinstance(code, int):
    return code
  print(code, file=sys.stderr)
  return 1


def _child(module, request) -> None:
  """Runs the driver in this forked process; never returns."""
  code = 1
  try:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python starts with SIGINT not ignored
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    source = os.open(request["stdin"], os.O_RDONLY)  # the protocol's pipe is not the driver's input
    os.dup2(source, 0)
    os.close(source)
    sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115 -- a fresh reader, no read-ahead
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
      target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(target, fd)
      os.close(target)
    code_text = request.get("code")
    sys.argv = ["-c" if code_text else module.__name__, *request["argv"]]
    try:
      if code_text:  # as ``python -c`` runs it, with the driver already imported
        exec(compile(code_text, "<string>", "exec"), {"__name__": "__main__"})
      else:
        module.run()
      code = 0
    except SystemExit as e:
      code = _exit_code(e.code)
    except BaseException:  # what the interpreter prints for an uncaught exception, and its exit code
      traceback.print_exc()
      code = 1
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:
        pass
    os._exit(code)


def _wait(pid: int, timeout: float) -> int:
  """The child's exit code as `subprocess` reports it (negative: killed by that signal)."""
  deadline = time.monotonic() + timeout
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(status)
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      return -signal.SIGKILL
    time.sleep(0.01)


def main() -> None:
  module = importlib.import_module(sys.argv[1])
  protocol_in, protocol_out = sys.stdin, sys.stdout
  for line in protocol_in:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      _child(module, request)
    returncode = _wait(pid, request["timeout"])
    protocol_out.write(json.dumps({"returncode": returncode}) + "\n")
    protocol_out.flush()


if __name__ == "__main__":
  main()

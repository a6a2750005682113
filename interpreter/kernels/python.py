# The Python kernel's driver (see repl.go), run as `python3 python.py
# STARTUP`. It reads requests from fd 3, a line each: the file holding
# the code to run, the run's sync mark, and "silent" for the server's own
# runs (no execution counted, nothing kept in the history). Code runs in
# IPython's shell, the one ipykernel runs (ZMQInteractiveShell): magics,
# `!` commands, top-level await, display formatters, In, Out and _ as in a
# Jupyter kernel. There is no Jupyter kernel around it: what the code
# prints goes straight to stdout and stderr, and its results, displays and
# errors to fd 4, a JSON line each, so that a run is two process wake-ups
# instead of ZeroMQ's sockets and threads. After a run the driver writes
# the mark to stdout and stderr, then done to fd 4. SIGINT interrupts a
# run (KeyboardInterrupt); between runs it is ignored. exit() in the code
# starts the driver afresh after its run, as Jupyter restarts a kernel
# that exited. STARTUP is run once the shell is made: the display formats
# E2B adds.
import base64
import json
import math
import os
import signal
import sys
import threading

_cwd = os.getcwd()  # the context's
sys.path[0] = _cwd  # as `python3 -m` has it
# Figures show inline, as in ipykernel (which sets the same default).
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

from IPython.core.displayhook import DisplayHook  # noqa: E402
from IPython.core.displaypub import DisplayPublisher  # noqa: E402
from ipykernel.zmqshell import ZMQInteractiveShell  # noqa: E402
from traitlets import Type  # noqa: E402
from traitlets.config import Config  # noqa: E402

_results = os.fdopen(4, "w", encoding="utf-8")
_results_lock = threading.Lock()


def _jsonable(value):
    """value as JSON has it, as Jupyter sends a display's data: bytes (an
    image's) in base64, a float that is no number as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


_running = False  # a run is under way: SIGINT interrupts it
_sending = False  # a line is being written: an interrupt waits for it
_interrupted = False


def _interrupt(signum, frame):
    global _interrupted
    if not _running:
        return
    if _sending:
        _interrupted = True
        return
    raise KeyboardInterrupt


def _send(line):
    """Writes one line to fd 4, after what the code printed so far, whole
    even when the run is interrupted meanwhile."""
    global _sending, _interrupted
    sys.stdout.flush()
    sys.stderr.flush()
    text = json.dumps(_jsonable(line)) + "\n"
    with _results_lock:
        _sending = True
        try:
            _results.write(text)
            _results.flush()
        finally:
            _sending = False
    if _interrupted and _running:
        _interrupted = False
        raise KeyboardInterrupt


class _ResultHook(DisplayHook):
    """The value of a run's last expression: its main result."""

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        _send({"type": "result", "data": format_dict})


class _Displays(DisplayPublisher):
    """What the code displays (display(), a figure): results, not main."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        _send({"type": "display", "data": data})

    def clear_output(self, wait=False):
        pass


class _Shell(ZMQInteractiveShell):
    displayhook_class = Type(_ResultHook)
    display_pub_class = Type(_Displays)

    def _showtraceback(self, etype, evalue, stb):
        _send({"type": "error", "name": etype.__name__, "value": str(evalue), "traceback": "\n".join(stb)})
        self._last_traceback = stb

    def _update_exit_now(self, change):
        pass  # exit() starts the driver again once its run is done


def _run(shell, line):
    global _running, _interrupted
    parts = line.split(" ")
    if len(parts) < 2:
        return None
    file, mark, silent = parts[0], parts[1], "silent" in parts[2:]
    try:
        with open(file, encoding="utf-8") as f:
            code = f.read()
        _interrupted, _running = False, True
        try:
            shell.run_cell(code, store_history=not silent, silent=silent)
        finally:
            _running = False
    except KeyboardInterrupt:
        shell.showtraceback()
    except Exception:  # the file unreadable: the run's error
        shell.showtraceback()
    return mark


def main():
    # A line at a time, as it is printed (print's text and its newline
    # are one write, as a Jupyter kernel's stream has them in one message).
    sys.stdout.reconfigure(line_buffering=True, write_through=False)
    sys.stderr.reconfigure(line_buffering=True, write_through=False)
    config = Config()
    config.HistoryManager.enabled = False  # kept in memory: no SQLite write per run
    shell = _Shell.instance(config=config, colors="NoColor")
    if len(sys.argv) > 1:
        shell.safe_execfile(sys.argv[1], shell.user_ns, raise_exceptions=True)
    shell.user_ns_hidden.update(shell.user_ns)  # %who shows the user's names only
    signal.signal(signal.SIGINT, _interrupt)
    requests = os.fdopen(3, "r", encoding="utf-8")
    while True:
        line = requests.readline()
        if not line:
            return
        mark = _run(shell, line.rstrip("\n"))
        if mark is None:
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, mark.encode())
        os.write(2, mark.encode())
        _send({"type": "done"})
        if shell.exit_now:
            # As a Jupyter kernel is restarted when its code exits: a new
            # process, the same pipes, the next request waiting in fd 3.
            os.chdir(_cwd)
            os.execv(sys.executable, [sys.executable] + sys.argv)


main()

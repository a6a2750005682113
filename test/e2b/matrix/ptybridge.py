"""Runs a command on a pseudo-terminal of a given size and bridges it to pipes.

    python3 ptybridge.py COLS ROWS -- COMMAND [ARG...]

The E2B CLI's terminal commands (sandbox create/spawn, connect) put stdin in
raw mode and size the remote PTY from the local one, so they need a real
terminal; cli.mjs drives them through this bridge: what it writes to the
bridge's stdin goes to the terminal, what the command prints comes out on
the bridge's stdout. The exit status is the command's (128+N for signal N).
Standard library only.
"""

import fcntl
import os
import pty
import select
import struct
import sys
import termios


def set_size(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def bridge(master, child):
    """Copies stdin to the terminal and the terminal to stdout until the child exits."""
    stdin_open = True
    while True:
        fds = [master] + ([0] if stdin_open else [])
        ready, _, _ = select.select(fds, [], [])
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if not data:
                break
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                stdin_open = False
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit("usage: ptybridge.py COLS ROWS -- COMMAND [ARG...]")
    cols, rows, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4:]
    child, master = pty.fork()
    if child == 0:
        set_size(1, cols, rows)
        os.execvp(argv[0], argv)
    code = bridge(master, child)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()

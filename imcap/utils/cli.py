"""What every command shares: one-line errors, for bad flags and for bad input alike.

A bad flag exits with status 2 and ``PROG: error: MESSAGE (see PROG --help)`` (argparse's
usage block is left out: the message names the flag). Bad input (``DataError``), a bad value
(``ValueError``) or a file that cannot be written (``OSError``: a full disk, a read-only
folder) exits with status 1 and ``PROG: error: MESSAGE``, the first line of the error only.
Set ``IMCAP_DEBUG=1`` to get the traceback instead.
"""

import argparse
import contextlib
import os
import sys

from imcap.utils.fileio import DataError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def error_line(error):
    """The first line of an error's message (or its type when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def one_line_errors(prog, *more):
    """Turns bad input, bad values and failed writes inside the block into one line on
    stderr and exit status 1. ``more``: further exception types to treat the same way."""
    try:
        yield
    except (DataError, ValueError, OSError) + tuple(more) as e:
        if os.environ.get("IMCAP_DEBUG"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        sys.exit(1)

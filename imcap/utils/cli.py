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


# argparse types that name what was expected
def positive(kind):
    def check(value):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return number
    return check


def non_negative(kind):
    def check(value):
        number = kind(value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
        return number
    return check


def probability(value):
    number = float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return number


DECODING_OPTIONS = {
    "ban_unk": "never emit UNK",
    "remove_bad_endings": "never end a caption right after a, an, the, in, for, at, of, with, "
                          "before, after, on, upon, near, to, is, are, am",
    "block_trigrams": "never repeat a trigram within a caption",
}


def add_decoding_options(parser):
    """The decoders' switches (``-ban_unk``, ``-remove_bad_endings``, ``-block_trigrams``)."""
    for name, help in DECODING_OPTIONS.items():
        parser.add_argument(f"-{name}", f"--{name}", action="store_true", help=help)


def decoding_options(args):
    """``{option: bool}`` of the parsed decoding switches, as ``make_decoder`` takes them."""
    return {name: getattr(args, name) for name in DECODING_OPTIONS}

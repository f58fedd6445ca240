"""Reading input files with clear errors, and writing output files atomically.

Every output the toolkit writes goes through ``atomic_output``: to ``<name>.partial`` first,
renamed into place only when it is complete, so an interrupted run never leaves a file that
looks finished.
"""

import contextlib
import json
import os
import shutil
import tempfile


class DataError(ValueError):
    """Bad input data; the message is one line naming the file, the field and what was expected."""


def load_json(path, what="JSON file"):
    """Loads a JSON file, raising ``DataError`` that names the file when it is missing or malformed."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is malformed JSON: {e.msg} (line {e.lineno}, "
                        f"column {e.colno})") from None


def partial_path(path, suffix=""):
    """The temporary name an output is written under until it is complete: ``PATH.partial``,
    or ``STEM.partial SUFFIX`` when ``path`` ends in ``suffix`` (for writers that insist on
    their extension: Keras' ``.keras`` and ``.weights.h5``, matplotlib's ``.png``)."""
    if suffix and path.endswith(suffix):
        return f"{path[:-len(suffix)]}.partial{suffix}"
    return f"{path.rstrip(os.sep)}.partial"


def prepare_output(path):
    """Checks that ``path`` can be written (its folder is created) before long work starts."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    check_writable(folder)
    if os.path.isdir(path):
        raise DataError(f"output {path} is a directory, expected a file name")


@contextlib.contextmanager
def atomic_output(path, suffix="", directory=False, keep_on_error=False, check=True):
    """Writes ``path`` all or nothing: yields the temporary name (``partial_path``) to write;
    when the block ends, moves it into place (atomic on one file system), replacing what was
    there; when the block raises (even ``KeyboardInterrupt``), removes it, unless
    ``keep_on_error`` (a resumable output, such as the feature cache).

    Args:
        path: the output; its folder is created and checked first (``prepare_output``).
        suffix: the extension the writer needs to see at the end of the temporary name.
        directory: the output is a folder (a SavedModel); a folder already at ``path`` is
            replaced once the new one is complete.
        check: check first that the folder can be written (``False`` for the many files of
            one folder already checked).
    """
    if check and directory:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        check_writable(os.path.dirname(os.path.abspath(path)))
    elif check:
        prepare_output(path)
    temporary = partial_path(path, suffix)
    try:
        yield temporary
        if directory and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        if not keep_on_error:
            _remove(temporary)
        raise


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def link_atomically(source, target):
    """``target`` becomes the file ``source`` (a hard link: checkpoints are ~100 MB, and files
    here are replaced, never rewritten in place; a copy where links are not supported)."""
    with atomic_output(target) as temporary:
        _remove(temporary)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)


def check_writable(folder):
    """Creates and removes a file in ``folder``: a read-only (or full) folder fails now, before
    any work, with the folder named."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test"):
            pass
    except OSError as e:
        raise DataError(f"output folder {folder} is not writable: {e.strerror or e}") from None


def check_space(path, need, what):
    """Fails when the folder of ``path`` has less than ``need`` bytes free for ``what``."""
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DataError(f"too little space in {folder}: {free / 1e6:.1f} MB free, {what} "
                        f"needs about {need / 1e6:.1f} MB")


def write_json(path, obj):
    """Writes ``obj`` as JSON (``json.dump`` defaults, as imcap_keras) and syncs it to disk."""
    with open(path, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path, obj):
    """Writes ``obj`` as JSON to ``path``, all or nothing (``atomic_output``)."""
    with atomic_output(path) as temporary:
        write_json(temporary, obj)

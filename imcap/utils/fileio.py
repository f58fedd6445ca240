"""Reading input files with clear errors, and writing output files atomically.

Every output goes to ``<name>.partial`` first and is renamed into place only when it is
complete, so an interrupted run never leaves a file that looks finished.
"""

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


def partial_path(path):
    """The temporary name an output is written under until it is complete."""
    return f"{path}.partial"


def prepare_output(path):
    """Checks that ``path`` can be written (its folder is created) before long work starts.

    Returns the ``.partial`` path to write to.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    check_writable(folder)
    if os.path.isdir(path):
        raise DataError(f"output {path} is a directory, expected a file name")
    return partial_path(path)


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


def commit(path):
    """Moves ``<path>.partial`` into place (atomic on one file system)."""
    os.replace(partial_path(path), path)


def discard(path):
    """Removes ``<path>.partial`` if it exists."""
    try:
        os.remove(partial_path(path))
    except FileNotFoundError:
        pass


def write_json(path, obj):
    """Writes ``obj`` as JSON (``json.dump`` defaults, as the seed) and syncs it to disk."""
    with open(path, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path, obj):
    """Writes ``obj`` as JSON to ``path`` through a ``.partial`` file."""
    tmp = prepare_output(path)
    try:
        write_json(tmp, obj)
        commit(path)
    except BaseException:
        discard(path)
        raise

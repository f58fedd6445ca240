"""Checkpoints and training state, written atomically (temporary name, then rename)."""

import json
import os

import keras
import numpy as np

from imcap.utils.fileio import DataError, write_json_atomic


def _save_atomically(save, path, suffix):
    """Calls ``save(temporary)`` (a name Keras accepts: it keeps ``suffix``), then renames."""
    if not path.endswith(suffix):
        raise ValueError(f"expected a file name ending in {suffix}, got {path!r}.")
    temporary = path[:-len(suffix)] + ".partial" + suffix
    try:
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_model(model, path):
    """Saves a ``.keras`` model (config, weights and optimizer state) atomically."""
    _save_atomically(model.save, path, ".keras")


def save_weights(model, path):
    """Saves weights only (``.weights.h5``) atomically."""
    _save_atomically(model.save_weights, path, ".weights.h5")


def load_model(path, compile=True):
    """Loads a checkpoint with ``safe_mode=True``; errors name the file."""
    import imcap.models.captioner  # noqa: F401  (registers the custom layers)
    if not os.path.isfile(path):
        raise DataError(f"checkpoint not found: {path}")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise DataError(f"checkpoint {path} cannot be loaded: {str(e).splitlines()[0]}") from None


def write_state(path, state):
    """The training state (stage, epoch, best metric, patience, ...) as JSON, atomically."""
    write_json_atomic(path, state)


def read_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"no training state to resume from: {path} (run without --resume "
                        f"first)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"training state {path} is malformed JSON: {e.msg}") from None



def save_optimizer(optimizer, path):
    """The optimizer's variables (moments, iteration count) as ``.npz``, atomically.

    Kept beside the ``.keras`` checkpoint because the trainable set of the CNN depends on the
    stage, which a checkpoint does not record: resuming compiles for the stage first, then
    restores these.
    """
    temporary = path + ".partial.npz"
    np.savez(temporary, *[np.asarray(v) for v in optimizer.variables])
    os.replace(temporary, path)


def restore_optimizer(optimizer, trainable_variables, path):
    optimizer.build(trainable_variables)
    with np.load(path) as stored:
        values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    if len(values) != len(optimizer.variables):
        raise DataError(f"optimizer state {path} holds {len(values)} variables, the model "
                        f"needs {len(optimizer.variables)}: it belongs to another run")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)

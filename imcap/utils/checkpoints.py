"""Checkpoints and training state, written atomically (temporary name, then rename)."""

import json
import os

import h5py
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


def check_data_matches(model, data, path):
    """A checkpoint (``path``) must speak the vocabulary of ``data`` (a ``CaptionData``) and,
    when ``data`` holds images, take images of their size."""
    config = model.config
    if config.vocabulary != data.vocabulary:
        ours, theirs = config.vocabulary, data.vocabulary
        i = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                 min(len(ours), len(theirs)))
        raise DataError(f"checkpoint {path} was trained with another vocabulary than "
                        f"{data.json_path} ({len(ours)} and {len(theirs)} words; word {i + 1} "
                        f"is {_word(ours, i)} and {_word(theirs, i)})")
    if not data.with_images:
        return
    if model.encoder is None:
        raise DataError(f"checkpoint {path} takes precomputed features, not images; use the "
                        f"captioner checkpoint train.py writes (MODEL_best.keras)")
    if config.image_size != data.image_size:
        raise DataError(f"checkpoint {path} takes {config.image_size} px images but "
                        f"{data.h5_path} holds {data.image_size} px ones; run prepro_coco.py "
                        f"with --imsize {config.image_size}")


def _word(vocabulary, i):
    return repr(vocabulary[i]) if i < len(vocabulary) else "missing"


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
    """The optimizer's variables (moments, iteration count) as HDF5 datasets ``0``, ``1``, ...,
    atomically.

    Kept beside the ``.keras`` checkpoint because the trainable set of the CNN depends on the
    stage, which a checkpoint does not record: resuming compiles for the stage first, then
    restores these.
    """
    def save(temporary):
        with h5py.File(temporary, "w") as f:
            for i, variable in enumerate(optimizer.variables):
                f.create_dataset(str(i), data=np.asarray(variable))
    _save_atomically(save, path, ".h5")


def restore_optimizer(optimizer, trainable_variables, path):
    optimizer.build(trainable_variables)
    try:
        with h5py.File(path, "r") as stored:
            values = [stored[str(i)][()] for i in range(len(stored))]
    except (OSError, KeyError) as e:
        raise DataError(f"optimizer state {path} cannot be read: {e}") from None
    if len(values) != len(optimizer.variables):
        raise DataError(f"optimizer state {path} holds {len(values)} variables, the model "
                        f"needs {len(optimizer.variables)}: it belongs to another run")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)

"""Checkpoints, optimizer state and the training state file, written atomically."""

import os

import h5py
import keras
import numpy as np

from imcap.utils.fileio import DataError, atomic_output, write_json_atomic


def _save_atomically(save, path, suffix):
    """Calls ``save(temporary)`` (a name Keras accepts: it keeps ``suffix``), then renames."""
    if not path.endswith(suffix):
        raise ValueError(f"expected a file name ending in {suffix}, got {path!r}.")
    with atomic_output(path, suffix) as temporary:
        save(temporary)


def save_model(model, path):
    """Saves a ``.keras`` model (config and weights) atomically, without its optimizer.

    Keras stores a compiled model's optimizer inside the ``.keras`` (and ignores
    ``include_optimizer`` for that format); the trainer keeps the optimizer state once, beside
    the checkpoint (``save_optimizer``), so it is left out here: a stage-2 checkpoint from images
    shrank from 378 MB to 126 MB.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        _save_atomically(model.save, path, ".keras")
        return
    model.optimizer = None
    try:
        _save_atomically(model.save, path, ".keras")
    finally:
        model.optimizer = optimizer


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
    ours, theirs = config.vocabulary, data.vocabulary
    first = ours.first_difference(theirs)
    if first is not None:
        raise DataError(f"checkpoint {path} was trained with another vocabulary than "
                        f"{data.json_path} ({len(ours)} and {len(theirs)} words; word {first} "
                        f"is {_word(ours, first)} and {_word(theirs, first)})")
    if getattr(data, "features", None) is not None:
        _check_features(config, data.features, path)
        return
    if not data.with_images:
        return
    if model.encoder is None:
        raise DataError(f"checkpoint {path} takes precomputed features "
                        f"({config.num_regions} x {config.feature_dim}), not the images of "
                        f"{data.h5_path}; pass -features PATH")
    if config.image_size != data.image_size:
        raise DataError(f"checkpoint {path} takes {config.image_size} px images but "
                        f"{data.h5_path} holds {data.image_size} px ones; run prepro_coco.py "
                        f"with --imsize {config.image_size}")


def _check_features(config, features, path):
    """A checkpoint must take features of the shape ``features`` (a ``RegionFeatures``) has."""
    ours = f"{config.num_regions} x {config.feature_dim}"
    if config.features_source:
        ours += f", from {config.features_source}"
    if config.feature_dim != features.dim:
        raise DataError(f"checkpoint {path} takes features of {ours} (regions x channels) but "
                        f"{features.kind} {features.path} has {features.dim} channels")
    variable = config.variable_regions
    if features.variable and not variable:
        raise DataError(f"checkpoint {path} takes {config.num_regions} regions per image but "
                        f"{features.kind} {features.path} has images with other counts (1 to "
                        f"{features.max_regions})")
    if features.max_regions > config.num_regions or (
            not variable and features.max_regions != config.num_regions):
        raise DataError(f"checkpoint {path} takes features of {ours} (regions x channels) but "
                        f"{features.kind} {features.path} has {features.max_regions} regions "
                        f"per image")


def _word(vocabulary, word_id):
    return repr(vocabulary.word(word_id)) if word_id <= len(vocabulary) else "missing"


def write_state(path, state):
    """The training state (``TrainingState.to_dict()``) as JSON, atomically."""
    write_json_atomic(path, state)


def _random_states(model):
    """The state variables of the model's random generators (dropout masks, sentinel dropout):
    Keras does not store them in a ``.keras``, and a loaded model draws fresh seeds."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def save_optimizer(optimizer, path, model=None):
    """The optimizer's variables (moments, iteration count) as HDF5 datasets ``0``, ``1``, ...,
    and the states of ``model``'s random generators in the group ``random_states``, atomically.

    Kept beside the ``.keras`` checkpoint because the trainable set of the CNN depends on the
    stage, which a checkpoint does not record: resuming compiles for the stage first, then
    restores these. With the random states, a resumed run draws the same dropout masks as an
    uninterrupted one.
    """
    def save(temporary):
        with h5py.File(temporary, "w") as f:
            for i, variable in enumerate(optimizer.variables):
                f.create_dataset(str(i), data=np.asarray(variable))
            if model is not None:
                group = f.create_group("random_states")
                for i, variable in enumerate(_random_states(model)):
                    group.create_dataset(str(i), data=np.asarray(variable))
    _save_atomically(save, path, ".h5")


def restore_optimizer(optimizer, trainable_variables, path, model=None):
    """Restores what ``save_optimizer`` wrote into ``optimizer`` (built for
    ``trainable_variables``) and ``model``'s random generators. A file written before the
    random states were kept restores the optimizer only."""
    optimizer.build(trainable_variables)
    try:
        with h5py.File(path, "r") as stored:
            values = [stored[str(i)][()] for i in range(len(stored) - ("random_states" in stored))]
            random = stored.get("random_states")
            random = [random[str(i)][()] for i in range(len(random))] if random else None
    except (OSError, KeyError) as e:
        raise DataError(f"optimizer state {path} cannot be read: {e}") from None
    if len(values) != len(optimizer.variables):
        raise DataError(f"optimizer state {path} holds {len(values)} variables, the model "
                        f"needs {len(optimizer.variables)}: it belongs to another run")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
    if model is None or random is None:
        return
    states = _random_states(model)
    if len(random) != len(states):
        raise DataError(f"optimizer state {path} holds {len(random)} random generator states, "
                        f"the model has {len(states)}: it belongs to another run")
    for variable, value in zip(states, random):
        variable.assign(value)

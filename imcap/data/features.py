"""A cache of CNN region features: the frozen encoder runs once over every image.

Stage 1 trains only the decoder, so the CNN's output for an image never changes; computing it
once and training from the cache removes the CNN from every training step. The cache is an
HDF5 ``features`` (N, K, D) float16 in the order of the preprocessed HDF5, with the encoder's
fingerprint (a hash of its weights and configuration) as an attribute: a cache made by another
encoder is never reused. It is written under a temporary name and renamed when complete; an
interrupted run (even ``kill -9``) leaves the temporary file, and the next run with the same
encoder resumes it after its last complete batch (checked by recomputing that batch).
"""

import hashlib
import logging
import os
import sys

import h5py
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from imcap.utils import fileio
from imcap.models.preprocessing import preprocess_images

log = logging.getLogger("imcap.features")


def encoder_fingerprint(encoder, cnn):
    """A hash of the encoder's weights, input size and output layer."""
    digest = hashlib.sha256(f"{cnn}:{encoder.input.shape}:{encoder.output.shape}".encode())
    for weights in encoder.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]


def cache_features(encoder, cnn, h5_path, out_path, batch_size=64):
    """Writes (or reuses) the feature cache of every image in ``h5_path``; returns its path."""
    fingerprint = encoder_fingerprint(encoder, cnn)
    if os.path.isfile(out_path):
        with h5py.File(out_path, "r") as f:
            if f.attrs.get("fingerprint") == fingerprint:
                log.info("reusing the feature cache %s", out_path)
                return out_path
    # compiled once: called eagerly, a Keras model runs several times slower
    run = tf.function(lambda images: encoder(preprocess_images(images, cnn), training=False),
                      reduce_retracing=True)

    def compute(start, stop):
        return np.asarray(run(images[start:stop].transpose(0, 2, 3, 1)), dtype=np.float16)

    # kept when interrupted: the next run resumes it
    with fileio.atomic_output(out_path, keep_on_error=True) as temporary, \
            h5py.File(h5_path, "r") as source:
        images = source["images"]
        total = images.shape[0]
        shape = (total,) + tuple(encoder.output.shape[1:])
        target, done = _resume_or_create(temporary, fingerprint, shape, batch_size, compute)
        with target, tqdm(total=total, initial=done, desc="features", unit="img",
                          file=sys.stderr) as progress:
            features = target["features"]
            for start in range(done, total, batch_size):
                stop = min(start + batch_size, total)
                features[start:stop] = compute(start, stop)
                target.attrs["done"] = stop  # the batch is on disk once flushed
                target.flush()
                progress.update(stop - start)
    return out_path


def _resume_or_create(path, fingerprint, shape, batch_size, compute):
    """An interrupted cache at ``path`` made by the same encoder, and how many images it holds
    (its last batch recomputed and compared first); otherwise a new, empty one. (Only the
    file's name says whether it is complete.)"""
    target = _open_interrupted(path, fingerprint, shape)
    if target is not None:
        done = int(target.attrs["done"])
        start = max(0, done - batch_size)
        if np.allclose(target["features"][start:done], compute(start, done), rtol=1e-2,
                       atol=1e-2):
            log.info("resuming the feature cache %s after %d of %d images", path, done,
                     shape[0])
            return target, done
        target.close()
    target = h5py.File(path, "w")
    target.create_dataset("features", shape, dtype="float16", chunks=(1,) + shape[1:])
    target.attrs["fingerprint"] = fingerprint
    target.attrs["done"] = 0
    target.flush()
    return target, 0


def _open_interrupted(path, fingerprint, shape):
    """``path`` opened for writing if it is a readable cache of this encoder and shape holding
    some images, else ``None``."""
    try:
        target = h5py.File(path, "r+")
    except (OSError, ValueError):
        return None
    try:
        if target.attrs.get("fingerprint") == fingerprint and target.attrs.get("done", 0) > 0 \
                and target["features"].shape == shape:
            return target
    except (OSError, KeyError, ValueError):
        pass
    target.close()
    return None


def read_split_features(cache_path, positions, batch_size=256):
    """Yields float32 feature batches of the images at HDF5 ``positions`` (for statistics)."""
    with h5py.File(cache_path, "r") as f:
        features = f["features"]
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            yield np.stack([features[p] for p in chunk]).astype(np.float32)

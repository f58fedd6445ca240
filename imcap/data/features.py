"""A cache of CNN region features: the frozen encoder runs once over every image.

Stage 1 trains only the decoder, so the CNN's output for an image never changes; computing it
once and training from the cache removes the CNN from every training step. The cache is a
features file (``imcap.data.region_features``): ``features`` (N, K, D) float16 in the order of
the preprocessed HDF5, ``image_ids`` from its JSON, the extractor in its attributes, and the
encoder's fingerprint (a hash of its weights and configuration): a cache made by another
encoder is never reused. It is written under a temporary name and renamed when complete; an
interrupted run (even ``kill -9``) leaves the temporary file, and the next run with the same
encoder resumes it after its last complete batch (checked by recomputing that batch).
"""

import concurrent.futures
import hashlib
import logging
import os
import sys

import h5py
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from imcap.data.region_features import open_region_features
from imcap.utils import fileio
from imcap.utils.fileio import DataError, load_json
from imcap.models.preprocessing import preprocess_images

log = logging.getLogger("imcap.features")


FORMAT = 2  # 2: a features file (image_ids, the extractor); 1: features alone


def encoder_fingerprint(encoder, cnn, image_ids=()):
    """A hash of the format, the encoder's weights, input size and output layer, and the
    images' ids (a cache of other images is never resumed)."""
    digest = hashlib.sha256(
        f"{FORMAT}:{cnn}:{encoder.input.shape}:{encoder.output.shape}".encode())
    for weights in encoder.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    digest.update(np.asarray(image_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def json_image_ids(json_path, count):
    """The ``id`` of each of the ``count`` images of prepro_coco.py's JSON, in its order."""
    images = load_json(json_path, "vocabulary json").get("images", [])
    ids = [image.get("id") if isinstance(image, dict) else None for image in images]
    if len(ids) != count or not all(isinstance(i, int) for i in ids):
        raise DataError(f"vocabulary json {json_path}: expected an integer 'id' for each of the "
                        f"{count} images of the HDF5")
    return np.array(ids, dtype=np.int64)


def extractor(encoder, cnn):
    """The attributes naming what made the features."""
    return {"backbone": cnn, "layer": encoder.layers[-2].name,
            "image_size": int(encoder.input.shape[1]),
            "preprocessing": f"imcap.models.preprocessing.preprocess_images(cnn={cnn!r})"}


class HDF5Images:
    """The images of prepro_coco.py's HDF5 as (B, S, S, 3) uint8 RGB batches."""

    def __init__(self, h5_path):
        self.file = h5py.File(h5_path, "r")
        self.images = self.file["images"]

    def __len__(self):
        return self.images.shape[0]

    def read(self, start, stop):  # contiguous here, in the reading thread
        return np.ascontiguousarray(self.images[start:stop].transpose(0, 2, 3, 1))

    def close(self):
        self.file.close()


def cache_features(encoder, cnn, h5_path, out_path, batch_size=64, json_path=None):
    """Writes (or reuses) the feature cache of every image in ``h5_path`` (whose JSON,
    ``json_path``, gives the image ids; by default the HDF5's name with ``.json``); returns its
    path."""
    json_path = json_path or os.path.splitext(h5_path)[0] + ".json"
    images = HDF5Images(h5_path)
    try:
        ids = json_image_ids(json_path, len(images))
        return write_features(encoder, cnn, images, ids, out_path, batch_size)
    finally:
        images.close()


def write_features(encoder, cnn, images, image_ids, out_path, batch_size=64, what="feature cache"):
    """Writes the features file of ``images`` (``len`` and ``read(start, stop)`` -> (B, S, S, 3)
    uint8 RGB, the next batch read while the CNN runs) with ``image_ids``; reuses a complete one
    of the same encoder and images, resumes an interrupted one. Returns ``out_path``."""
    fingerprint = encoder_fingerprint(encoder, cnn, image_ids)
    if os.path.isfile(out_path):
        with h5py.File(out_path, "r") as f:
            if f.attrs.get("fingerprint") == fingerprint:
                log.info("reusing the %s %s", what, out_path)
                return out_path
    # compiled once: called eagerly, a Keras model runs several times slower
    run = tf.function(lambda batch: tf.cast(encoder(preprocess_images(batch, cnn),
                                                    training=False), tf.float16),
                      reduce_retracing=True)

    def compute(start, stop, batch=None):
        batch = images.read(start, stop) if batch is None else batch
        return run(batch).numpy()

    total = len(images)
    shape = (total,) + tuple(encoder.output.shape[1:])
    # kept when interrupted: the next run resumes it
    with fileio.atomic_output(out_path, keep_on_error=True) as temporary:
        target, done = _resume_or_create(temporary, fingerprint, shape, batch_size, compute)
        if "image_ids" not in target:
            target["image_ids"] = np.asarray(image_ids, dtype=np.int64)
            target.attrs.update(extractor(encoder, cnn))
        with target, tqdm(total=total, initial=done, desc="features", unit="img",
                          file=sys.stderr) as progress, \
                concurrent.futures.ThreadPoolExecutor(1) as reader:
            features = target["features"]
            starts = list(range(done, total, batch_size))
            upcoming = reader.submit(images.read, done, min(done + batch_size, total)) \
                if starts else None
            for n, start in enumerate(starts):
                stop = min(start + batch_size, total)
                batch = upcoming.result()
                if n + 1 < len(starts):  # read the next batch while this one runs
                    upcoming = reader.submit(images.read, stop, min(stop + batch_size, total))
                features[start:stop] = compute(start, stop, batch)
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


def read_split_features(features, image_ids, batch_size=256):
    """Yields float32 batches of the features of ``image_ids`` (for statistics): (B, K, D)
    when every image has K regions, else the real regions alone as (n, 1, D) (per-channel
    statistics only). ``features``: a path or a ``RegionFeatures``."""
    if isinstance(features, str):
        features = open_region_features(features)
    for start in range(0, len(image_ids), batch_size):
        batch, counts = features.read(image_ids[start:start + batch_size])
        if features.variable:
            yield np.concatenate([rows[:n] for rows, n in zip(batch, counts)])[:, None, :]
        else:
            yield batch

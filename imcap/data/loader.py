"""A ``tf.data`` pipeline over one split of a preprocessed dataset (NeuralTalk2 HDF5 + JSON).

Images are streamed from the HDF5 batch by batch (never loaded whole), turned from (3, S, S)
into (S, S, 3) and preprocessed for the encoder; captions are held in memory. Each element is a
batch of ``B`` images with ``N = seq_per_img`` captions each::

    x = {"images": (B, S, S, 3) float32, "words": (B, N, T - 1) int32}   previous words
        (or {"features": (B, K, D) float32, ...} from precomputed features, with
        "num_regions": (B,) int32 when images have different region counts)
    y = (B, N, T - 1) int32                                              the caption shifted by one
    sample_weight = (B, N, T - 1) float32                                1 on words, 0 on padding

where ``T`` is the HDF5's ``max_length`` (``words = labels[:, :-1]``, ``y = labels[:, 1:]``).
Training draws ``N`` random captions per image each epoch (imcap_keras' behaviour is ``N = 1``)
and shuffles images, both seeded by ``(seed, epoch)`` so that an epoch can be replayed exactly.
Evaluation keeps the stored order, takes the first ``N`` captions, and appends the image ids:
``(x, y, sample_weight, image_ids)`` (training does too with ``with_ids``). The last partial
batch is always kept.
"""

import contextlib
import re

import h5py
import numpy as np
import tensorflow as tf

from imcap.utils.fileio import DataError, load_json
from imcap.data.region_features import RegionFeatures, open_region_features
from imcap.data.vocabulary import Vocabulary

LABEL_FIELDS = ("labels", "label_start_ix", "label_end_ix", "label_length")


class CaptionData:
    """One split of a preprocessed dataset: captions in memory, images read from the HDF5.

    Args:
        h5_path: the HDF5 written by ``prepro_coco.py`` (or by imcap_keras' script).
        json_path: its JSON (``ix_to_word`` and ``images`` with their splits).
        split: ``"train"``, ``"val"``, ``"test"`` (or ``"restval"`` if kept separate).
        with_images: ``False`` for a labels-only HDF5 (``--no_images``).
        features: precomputed region features of the images, matched by image id: a path
            (a features file, imcap's feature cache included, or a folder; see
            ``imcap.data.region_features``) or a ``RegionFeatures``. The dataset then yields
            ``{"features": (B, K, D) float32, "words"}`` (and ``"num_regions"``, see
            ``num_regions``) instead of images.
        num_regions: yield each image's region count as ``x["num_regions"]`` (default: when
            the features' images have different counts); ``regions``: pad to this K (a
            model's), default the features' largest count.
    """

    def __init__(self, h5_path, json_path, split, with_images=True, features=None,
                 num_regions=None, regions=None):
        self.h5_path, self.json_path = h5_path, json_path
        self.split = split
        if features is not None and not isinstance(features, RegionFeatures):
            features = open_region_features(features)
        self.features = features
        self.features_path = features.path if features is not None else None
        self.with_images = with_images and features is None
        info = load_json(json_path, "vocabulary json")
        if not isinstance(info, dict) or not isinstance(info.get("ix_to_word"), dict) \
                or not isinstance(info.get("images"), list):
            raise DataError(f"vocabulary json {json_path}: expected an object with 'ix_to_word' "
                            f"and 'images', as prepro_coco.py writes")
        self.vocabulary = Vocabulary.from_ix_to_word(info["ix_to_word"], json_path)
        try:
            splits = [image["split"] for image in info["images"]]
        except (TypeError, KeyError):
            raise DataError(f"vocabulary json {json_path}: every entry of 'images' needs a "
                            f"'split'") from None
        self.positions = np.array([i for i, s in enumerate(splits) if s == split], dtype=np.int64)
        if not len(self.positions):
            found = sorted(set(splits))
            raise DataError(f"vocabulary json {json_path}: split {split!r} has no images "
                            f"(splits present: {', '.join(found) or 'none'})")
        self.image_ids = np.array([info["images"][i].get("id", -1) for i in self.positions],
                                  dtype=np.int64)
        self._read_labels(h5_path, json_path, len(splits))
        self._h5 = None
        if features is not None:
            features.check_images(self.image_ids, json_path, split)
            self.num_regions = features.variable if num_regions is None else num_regions
            self.feature_shape = (regions or features.max_regions, features.dim)

    @classmethod
    def for_model(cls, h5_path, json_path, split, config, features=None):
        """``split`` as a captioner with ``config`` (a ``CaptionerConfig``) takes it: its images,
        or its ``features`` padded to the model's regions (with their counts when the model
        has ``variable_regions``)."""
        if features is None:
            return cls(h5_path, json_path, split)
        return cls(h5_path, json_path, split, with_images=False, features=features,
                   regions=config.num_regions, num_regions=config.variable_regions)

    def _read_labels(self, h5_path, json_path, num_images):
        try:
            h5 = h5py.File(h5_path, "r")
        except FileNotFoundError:
            raise DataError(f"HDF5 file not found: {h5_path}") from None
        except OSError as e:
            raise DataError(f"HDF5 file {h5_path} cannot be read: {e}") from None
        with h5:
            fields = LABEL_FIELDS + (("images",) if self.with_images else ())
            for field in fields:
                if field not in h5:
                    raise DataError(f"HDF5 file {h5_path}: dataset '{field}' is missing")
            labels = h5["labels"][()]
            start, end = h5["label_start_ix"][()], h5["label_end_ix"][()]
            sizes = {"label_start_ix": len(start), "label_end_ix": len(end)}
            if self.with_images:
                sizes["images"] = h5["images"].shape[0]
                if h5["images"].ndim != 4 or h5["images"].shape[1] != 3:
                    raise DataError(f"HDF5 file {h5_path}: dataset 'images' has shape "
                                    f"{h5['images'].shape}, expected (N, 3, S, S)")
                self.image_size = h5["images"].shape[2]
        for field, size in sizes.items():
            if size != num_images:
                raise DataError(f"HDF5 file {h5_path}: dataset '{field}' has {size} entries but "
                                f"{json_path} lists {num_images} images")
        if labels.ndim != 2 or np.any(start < 1) or np.any(end < start) \
                or np.any(end > len(labels)):
            raise DataError(f"HDF5 file {h5_path}: label_start_ix/label_end_ix must be 1-based "
                            f"inclusive pointers into the {len(labels)} rows of 'labels'")
        if labels.max(initial=0) >= self.vocabulary.size:
            raise DataError(f"HDF5 file {h5_path}: 'labels' holds word id {labels.max()} but "
                            f"{json_path} has only {len(self.vocabulary)} words; the two files "
                            f"do not belong together")
        self.labels = labels.astype(np.int32)
        self.label_start = start[self.positions].astype(np.int64) - 1  # 0-based rows
        self.label_count = end[self.positions].astype(np.int64) - self.label_start
        self.seq_length = labels.shape[1]

    def read_features(self, split_indices):
        """(B, K, D) float32 features and (B,) int32 region counts for indices into this
        split."""
        return self.features.read(self.image_ids[split_indices], self.feature_shape[0])

    def __len__(self):
        return len(self.positions)

    def caption_rows(self, seq_per_img, rng=None):
        """(n, seq_per_img) rows of ``labels``: random without replacement (repeated when an image
        has fewer captions) if ``rng`` is given, else each image's first captions in order."""
        n, counts = len(self), self.label_count
        if rng is None:
            choice = np.arange(seq_per_img)[None, :] % counts[:, None]
        else:
            max_count = int(counts.max())
            keys = rng.random((n, max_count))
            keys[np.arange(max_count)[None, :] >= counts[:, None]] = np.inf
            shuffled = np.argsort(keys, axis=1)
            wrap = np.arange(seq_per_img)[None, :] % counts[:, None]
            choice = np.take_along_axis(shuffled, wrap, axis=1)
        return self.label_start[:, None] + choice

    def epoch_plan(self, seq_per_img=1, seed=123, epoch=0, training=True):
        """Which images (indices into this split) and caption rows one epoch visits, in order."""
        if training:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(self))
            rows = self.caption_rows(seq_per_img, rng)[order]
        else:
            order = np.arange(len(self))
            rows = self.caption_rows(seq_per_img)
        return order, rows

    def read_images(self, split_indices):
        """(B, S, S, 3) uint8 images for indices into this split, read from the HDF5."""
        if self._h5 is None:
            self._h5 = h5py.File(self.h5_path, "r")
        dataset = self._h5["images"]
        # one read per image: h5py's fancy indexing (dataset[list]) is ~100x slower
        images = np.stack([dataset[p] for p in self.positions[split_indices]])
        return images.transpose(0, 2, 3, 1)

    def dataset(self, batch_size, preprocess=None, training=True, seq_per_img=1, seed=123,
                epoch=0, with_ids=None):
        """The ``tf.data.Dataset`` of one epoch (see the module docstring).

        ``preprocess(images, bgr=...)`` turns a batch of (B, S, S, 3) uint8 images into the
        encoder's input (``imcap.models.preprocessing.preprocessor``); it is needed for images,
        not for features. ``with_ids`` appends the image ids (default: when not
        ``training``; self-critical training wants them too). When it ``wants_bgr`` (caffe preprocessing) the loader flips the
        channels in NumPy, where it costs almost nothing (``tf.reverse`` is slow on CPU).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if seq_per_img < 1:
            raise ValueError(f"seq_per_img must be at least 1, got {seq_per_img}")
        if not self.with_images and self.features is None:
            raise ValueError(f"{self.h5_path} was opened without images")
        if self.features is None and preprocess is None:
            raise ValueError("a dataset of images needs the encoder's preprocessing "
                             "(preprocess=imcap.models.preprocessing.preprocessor(cnn))")
        order, rows = self.epoch_plan(seq_per_img, seed, epoch, training)
        captions = self.labels[rows]  # (n, N, T)
        with_ids = not training if with_ids is None else with_ids
        slices = (order, captions) + ((self.image_ids[order],) if with_ids else ())

        wants_bgr = getattr(preprocess, "wants_bgr", True)

        def read(indices):  # in the channel order the encoder's preprocessing wants
            images = self.read_images(indices)
            return np.ascontiguousarray(images[..., ::-1]) if wants_bgr else images

        def load_inputs(indices):
            if self.features is not None:
                features, counts = tf.numpy_function(self.read_features, [indices],
                                                     (tf.float32, tf.int32))
                features.set_shape((None,) + tuple(self.feature_shape))
                counts.set_shape((None,))
                return {"features": features, **({"num_regions": counts}
                                                  if self.num_regions else {})}
            images = tf.numpy_function(read, [indices], tf.uint8)
            images.set_shape((None, self.image_size, self.image_size, 3))
            return {"images": preprocess(images, bgr=wants_bgr)}

        def load(indices, caps, *ids):
            x = dict(load_inputs(indices), words=caps[:, :, :-1])
            targets = caps[:, :, 1:]
            weights = tf.cast(targets > 0, tf.float32)
            return (x, targets, weights) + ids

        data = tf.data.Dataset.from_tensor_slices(slices).batch(batch_size)
        data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # tf.data's autotuner off (parallelism stays one call per core): with it on, tearing down
        # an epoch's iterator at the end of fit() took 20 s in one epoch out of three here, as
        # fast otherwise (bench/loader.py)
        options = tf.data.Options()
        options.autotune.enabled = False
        return data.prefetch(tf.data.AUTOTUNE).with_options(options)


@contextlib.contextmanager
def reading_errors():
    """Bad input found while ``tf.data`` reads a batch (a ``DataError`` inside
    ``tf.numpy_function``, such as a NaN feature) reaches the caller as a TensorFlow error; this
    turns it back into the ``DataError``, one line."""
    try:
        yield
    except tf.errors.OpError as e:
        match = re.search(r"DataError: ([^\n]*)", e.message or "")
        if match is None:
            raise
        raise DataError(match.group(1)) from None

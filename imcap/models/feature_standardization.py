"""Standardising CNN region features with statistics of the training split."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="imcap")
class FeatureStandardization(keras.layers.Layer):
    """``(v - center) * scale`` on region features (batch, K, D).

    Raw features of a randomly initialised ResNet differ between channels by orders of
    magnitude and made every caption the same; dividing each channel by its spread on the
    training split (and, optionally, removing each position's mean) fixes that. The statistics
    are non-trainable weights, as ``keras.layers.Normalization`` keeps its mean and variance:
    ``scale`` (D,) and, with ``center``, ``center`` (K, D); they are saved with the other
    weights, and the config holds only whether there is a center. ``set_statistics`` fills them
    (``feature_statistics`` computes them); until then the layer is the identity.

    Checkpoints saved before the statistics were weights kept them in the config
    (``{"scale": [...], "center": [...]}``); ``from_config`` (and ``statistics``) takes them as
    the weights' values, and loading such a file, which has no weights for the layer, keeps
    them.

    Args:
        center: subtract a per-position, per-channel mean before scaling.
        statistics: ``(scale, center or None)`` to start from (migrated checkpoints).
    """

    def __init__(self, center=False, statistics=None, **kwargs):
        super().__init__(**kwargs)
        self.center = bool(center)
        self._statistics = statistics

    def build(self, input_shape):
        regions, channels = input_shape[-2], input_shape[-1]
        scale, center = self._statistics or (None, None)
        self.scale = self.add_weight(name="scale", shape=(channels,), trainable=False,
                                     initializer=_values(scale, "ones"))
        if self.center:
            self.mean = self.add_weight(name="center", shape=(regions, channels),
                                        trainable=False, initializer=_values(center, "zeros"))
        self.built = True

    def set_statistics(self, scale, center=None):
        """Sets the statistics (``feature_statistics``' output) of a built layer."""
        if (center is not None) != self.center:
            raise ValueError(f"the layer was built {'with' if self.center else 'without'} a "
                             f"center; got {'one' if center is not None else 'none'}.")
        self.scale.assign(np.asarray(scale, dtype="float32").reshape(self.scale.shape))
        if self.center:
            self.mean.assign(np.asarray(center, dtype="float32").reshape(self.mean.shape))

    def call(self, features):
        features = ops.cast(features, self.compute_dtype)
        if self.center:
            features = features - ops.cast(self.mean, self.compute_dtype)
        return features * ops.cast(self.scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def load_own_variables(self, store):
        if self._statistics is not None and not len(store.keys()):
            return  # a checkpoint from before the statistics were weights: keep its config's
        super().load_own_variables(store)

    def get_config(self):
        config = super().get_config()
        config.update({"center": self.center})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("scale"), list):  # saved before the statistics were weights
            scale, center = config.pop("scale"), config.pop("center", None)
            return cls(center=center is not None, statistics=(scale, center), **config)
        return cls(**config)


def _values(values, default):
    if values is None:
        return default
    array = np.asarray(values, dtype="float32")
    return lambda shape, dtype=None: ops.cast(ops.reshape(array, shape), dtype or "float32")


def feature_statistics(batches, center=False, epsilon=1e-6):
    """Per-channel scale (and per-position mean if ``center``) from batches of (B, K, D) features.

    Returns ``(scale (D,), center (K, D) or None)`` as float64 arrays, accumulated in float64 so
    that any number of batches can be streamed.
    """
    count, total, total_sq, per_position = 0, None, None, None
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float64)
        if total is None:
            total = np.zeros(batch.shape[-1])
            total_sq = np.zeros(batch.shape[-1])
            per_position = np.zeros(batch.shape[1:])
        count += batch.shape[0]
        total += batch.sum(axis=(0, 1))
        total_sq += np.square(batch).sum(axis=(0, 1))
        per_position += batch.sum(axis=0)
    if not count:
        raise ValueError("feature_statistics needs at least one batch of features, got none.")
    num_regions = per_position.shape[0]
    position_mean = per_position / count
    if center:
        # spread around each position's own mean: E[v^2] - mean over positions of E_pos[v]^2
        variance = total_sq / (count * num_regions) - np.square(position_mean).mean(axis=0)
    else:
        mean = total / (count * num_regions)
        variance = total_sq / (count * num_regions) - np.square(mean)
    scale = 1.0 / np.sqrt(np.maximum(variance, 0.0) + epsilon)
    return scale, (position_mean if center else None)

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
    are constructor arguments, so they live in the model config and in every checkpoint.

    Args:
        scale: (D,) multipliers, usually 1 / std of each channel.
        center: None, or (K, D) means of each position and channel to subtract.
    """

    def __init__(self, scale, center=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(v) for v in np.asarray(scale, dtype=np.float64).reshape(-1)]
        self.center = None if center is None else np.asarray(center, dtype=np.float64).tolist()

    def call(self, features):
        features = ops.cast(features, self.compute_dtype)
        if self.center is not None:
            features = features - ops.cast(ops.convert_to_tensor(self.center), self.compute_dtype)
        return features * ops.cast(ops.convert_to_tensor(self.scale), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "center": self.center})
        return config


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

"""Repeating per-image tensors once per caption, for images with several captions."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="imcap")
class CaptionExpansion(keras.layers.Layer):
    """Flattens (batch, N, time) captions to (batch * N, time) and repeats each per-image tensor
    N times along the batch axis, so that image-side work runs once per image, not per caption.

    Call arguments:
        inputs: ``[words, *per_image]``: words (batch, N, time) int, and tensors (batch, ...)
            of any dtype (the boolean region mask of ``variable_regions`` too).

    Returns:
        ``[words (batch * N, time), *per_image (batch * N, ...)]``, caption-major within each
        image (rows ``i * N .. i * N + N - 1`` belong to image ``i``).
    """

    def call(self, inputs):
        words, per_image = inputs[0], inputs[1:]
        captions_per_image = ops.shape(words)[1]
        flat_words = ops.reshape(words, (-1, ops.shape(words)[2]))
        return [flat_words] + [ops.repeat(t, captions_per_image, axis=0) for t in per_image]

    def compute_output_spec(self, inputs):
        words = inputs[0]
        batch = None if words.shape[0] is None or words.shape[1] is None \
            else words.shape[0] * words.shape[1]
        specs = [keras.KerasTensor((batch, words.shape[2]), dtype=words.dtype)]
        specs += [keras.KerasTensor((batch,) + t.shape[1:], dtype=t.dtype) for t in inputs[1:]]
        return specs

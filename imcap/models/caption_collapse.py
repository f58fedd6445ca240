"""Regrouping per-caption outputs by image: the inverse of CaptionExpansion."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="imcap")
class CaptionCollapse(keras.layers.Layer):
    """Reshapes (batch * N, ...) per-caption outputs back to (batch, N, ...).

    Call arguments:
        inputs: ``[values (batch * N, ...), words (batch, N, time)]``; the words give N.
    """

    def call(self, inputs):
        values, words = inputs
        shape = ops.shape(values)
        return ops.reshape(values, (ops.shape(words)[0], ops.shape(words)[1]) + tuple(shape[1:]))

    def compute_output_spec(self, inputs):
        values, words = inputs
        return keras.KerasTensor(words.shape[:2] + values.shape[1:], dtype=values.dtype)

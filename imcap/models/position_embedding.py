"""A learned embedding of each region's position, added to the region features."""

import keras


@keras.saving.register_keras_serializable(package="imcap")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned (K, D) embedding to region features (batch, K, D), so that attention can
    tell regions apart by where they are, not only by what they show.

    Args:
        initializer: of the (K, D) table; small random values by default.
    """

    def __init__(self, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=tuple(input_shape[1:]),
                                          initializer=self.initializer)
        self.built = True

    def call(self, features):
        return features + self.embeddings

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"initializer": keras.initializers.serialize(self.initializer)})
        return config

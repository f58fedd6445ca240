"""Spatial attention with a visual sentinel (Lu et al. 2017, eqs. 6-8 and 11-12), as
imcap_keras' model.py wires it at its final revision (796b65a, model.py lines 117-173)."""

import keras
from keras import ops

# a logit low enough that softmax gives a slot exactly zero weight (a switched-off sentinel, a
# padded region): the float32 softmax underflows exp(-1e4 - max) to 0.0
_NEGATIVE = -1e4


@keras.saving.register_keras_serializable(package="imcap")
class AdaptiveAttention(keras.layers.Layer):
    """Attention over K regions and, with ``use_sentinel``, the visual sentinel (K + 1 slots).

    With projected regions V (batch, K, z) and their keys V_e (batch, K, e) computed once per
    image, for each step t of the hidden states h and sentinels s (batch, time, units)::

        h_z = tanh(W_hz h_t)         h_e = W_he h_z            (imcap_keras: zh_linear, zh_embed)
        s_z = relu(W_sz s_t)         s_e = W_se s_z            (imcap_keras: zs_linear, zs_embed)
        a_t = w^T tanh([V_e ; s_e] + h_e) + b                  (K + 1 logits, eq. 6 / 12)
        alpha_hat_t = softmax(a_t)   beta_t = alpha_hat_t[K]   (eq. 12, float32)
        c_hat_t = sum_k alpha_hat_t[k] [V ; s_z]_k = beta_t s_z + (1 - beta_t) c_t    (eq. 11)

    and returns ``h_z + c_hat_t`` (the input of imcap_keras' output MLP) with ``alpha_hat_t``.
    h_e and s_e are linear, as W_g h_t and W_s s_t in the paper and ``zh_embed`` / ``zs_embed`` at
    imcap_keras HEAD (its revision 31526ea had tanh and relu there).
    Without the sentinel the softmax runs over the K regions only (eqs. 6-8).

    With a ``region_mask`` (images with fewer than K real regions, padded), the logits of the
    padded regions are replaced by a large negative constant before the softmax, so they get
    exactly zero weight and c_t is the attention over the real regions only; the sentinel slot
    is always there. Without the sentinel every image needs at least one real region.

    Args:
        z_dim: size of the projected regions, h_z and s_z (imcap_keras' ``-z_dim``).
        emb_dim: size of the attention keys (imcap_keras' ``-emb_dim``).
        use_sentinel: attend to the sentinel as a (K + 1)-th slot (imcap_keras' ``--sgate``).
        dropout: imcap_keras' ``--dr`` dropout on h_z, s_z and the key sums (before their tanh),
            during training.
        sentinel_dropout: during training, the fraction of sequences whose sentinel is switched
            off (beta = 0 at every step), so the decoder must learn to look at the image.

    Call arguments:
        inputs: ``[h, regions, keys]`` or, with the sentinel, ``[h, regions, keys, s]``:
            h and s (batch, time, units), regions (batch, K, z_dim), keys (batch, K, emb_dim).
        region_mask: optional boolean (batch, K), True for the real regions of each image
            (the same for every step). Not Keras's ``mask`` (which would be over time).
        training: whether the dropouts apply.

    Returns:
        ``(h_z + c_hat, weights)``: (batch, time, z_dim) and float32 (batch, time, K [+ 1]).
    """

    def __init__(self, z_dim, emb_dim, use_sentinel=True, dropout=0.0, sentinel_dropout=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        for name, rate in (("dropout", dropout), ("sentinel_dropout", sentinel_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        if sentinel_dropout and not use_sentinel:
            raise ValueError("sentinel_dropout needs use_sentinel=True, got use_sentinel=False.")
        self.z_dim = z_dim
        self.emb_dim = emb_dim
        self.use_sentinel = use_sentinel
        self.dropout = dropout
        self.sentinel_dropout = sentinel_dropout
        policy = self.dtype_policy
        self.hidden_linear = keras.layers.Dense(z_dim, activation="tanh", name="zh_linear",
                                                dtype=policy)
        self.hidden_embed = keras.layers.Dense(emb_dim, name="zh_embed", dtype=policy)
        if use_sentinel:
            self.sentinel_linear = keras.layers.Dense(z_dim, activation="relu", name="zs_linear",
                                                      dtype=policy)
            self.sentinel_embed = keras.layers.Dense(emb_dim, name="zs_embed", dtype=policy)
        self.score = keras.layers.Dense(1, name="att", dtype=policy)
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout", dtype=policy)
        self.seed_generator = keras.random.SeedGenerator(seed=None)

    def build(self, input_shape):
        # tuples: a loaded model's build config gives lists
        hidden_shape, region_shape, key_shape = (tuple(s) for s in input_shape[:3])
        self.hidden_linear.build(hidden_shape)
        self.hidden_embed.build(hidden_shape[:-1] + (self.z_dim,))
        if self.use_sentinel:
            self.sentinel_linear.build(tuple(input_shape[3]))
            self.sentinel_embed.build(tuple(input_shape[3])[:-1] + (self.z_dim,))
        self.score.build(key_shape[:-1] + (self.emb_dim,))
        self.built = True

    def call(self, inputs, region_mask=None, training=None):
        hidden, regions, keys = inputs[:3]
        h_z = self.dropout_layer(self.hidden_linear(hidden), training=training)
        h_e = ops.expand_dims(self.hidden_embed(h_z), 2)  # (batch, time, 1, emb)
        summed = ops.expand_dims(keys, 1) + h_e  # (batch, time, K, emb)
        logits = self.score(ops.tanh(self.dropout_layer(summed, training=training)))[..., 0]
        if region_mask is not None:
            real = ops.expand_dims(ops.cast(region_mask, "bool"), 1)  # (batch, 1, K)
            logits = ops.where(real, ops.cast(logits, "float32"), _NEGATIVE)
        if self.use_sentinel:
            s_z = self.dropout_layer(self.sentinel_linear(inputs[3]), training=training)
            sentinel_key = ops.expand_dims(self.sentinel_embed(s_z), 2)  # (batch, time, 1, emb)
            sentinel_logit = self.score(
                ops.tanh(self.dropout_layer(sentinel_key + h_e, training=training)))[..., 0]
            sentinel_logit = ops.cast(sentinel_logit, "float32")
            if training and self.sentinel_dropout > 0:
                batch = ops.shape(hidden)[0]
                off = keras.random.uniform((batch, 1, 1), seed=self.seed_generator) \
                    < self.sentinel_dropout
                sentinel_logit = ops.where(off, _NEGATIVE, sentinel_logit)
            logits = ops.concatenate([ops.cast(logits, "float32"), sentinel_logit], axis=-1)
        weights = ops.softmax(ops.cast(logits, "float32"), axis=-1)  # (batch, time, K [+ 1])
        num_regions = ops.shape(regions)[1]
        region_weights = ops.cast(weights[..., :num_regions], self.compute_dtype)
        context = ops.matmul(region_weights, regions)  # (batch, time, z)
        if self.use_sentinel:
            context = context + ops.cast(weights[..., -1:], self.compute_dtype) * s_z
        return h_z + context, weights

    def compute_output_spec(self, inputs, region_mask=None, training=None):
        hidden, regions = inputs[0], inputs[1]
        slots = None if regions.shape[1] is None else regions.shape[1] + int(self.use_sentinel)
        return (keras.KerasTensor(hidden.shape[:-1] + (self.z_dim,), dtype=self.compute_dtype),
                keras.KerasTensor(hidden.shape[:-1] + (slots,), dtype="float32"))

    def get_config(self):
        config = super().get_config()
        config.update({
            "z_dim": self.z_dim,
            "emb_dim": self.emb_dim,
            "use_sentinel": self.use_sentinel,
            "dropout": self.dropout,
            "sentinel_dropout": self.sentinel_dropout,
        })
        return config

"""The captioner of Lu et al. (2017) as imcap_keras' model.py builds it: one functional model
for teacher-forced training, and a step function with the same weights for decoding."""

import keras
from keras import ops

from imcap.models.adaptive_attention import AdaptiveAttention
from imcap.models.caption_collapse import CaptionCollapse
from imcap.models.caption_expansion import CaptionExpansion
from imcap.models.config import CaptionerConfig, legacy_statistics
from imcap.models.encoder import build_encoder
from imcap.models.feature_standardization import FeatureStandardization
from imcap.models.position_embedding import PositionEmbedding
from imcap.models.precision import policy_scope
from imcap.models.sentinel_lstm import SentinelLSTM


def region_mask(num_regions, max_regions):
    """(B, K) boolean, True for the real regions of padded features: the first
    ``num_regions[b]`` of the K = ``max_regions`` rows of image b."""
    positions = ops.expand_dims(ops.arange(max_regions, dtype="int32"), 0)  # (1, K)
    return ops.less(positions, ops.expand_dims(ops.cast(num_regions, "int32"), 1))


@keras.saving.register_keras_serializable(package="imcap")
class Captioner(keras.Model):
    """Images (or precomputed region features) and previous words -> next-word logits.

    Image side, once per image: region features V (K x D) from the CNN, optionally
    standardised and given a position embedding; v_g = relu(W_g mean(V)) (imcap_keras' ``Vg_``),
    regions relu(W_i V) (``Vi``) and attention keys relu(W_e Vi) (``Vi_emb``).
    Caption side: x_t = [relu(embedding(w_{t-1})) ; v_g] feeds the SentinelLSTM (h_t, s_t); the
    LSTM never sees the attention context, so all T steps of attention and output run at once
    after it. AdaptiveAttention gives h_z + c_hat_t, then imcap_keras' MLP tanh(W_m .) and the
    vocabulary logits (float32). ``attention=False`` is imcap_keras' ``--lstm`` baseline: logits
    straight from h_t. The sentinel gate exists only with ``use_sentinel`` (and attention).

    This is imcap_keras' final model (796b65a, ``model.py``): imcap_keras concatenates
    [v_g ; w_t], here [w_t ; v_g], the same model with the LSTM kernel's rows in another order.
    ``--dr`` (``dropout_layers``) drops, at ``dr_ratio``, what imcap_keras' does: ``Vg_``, ``Vi``,
    the word embedding, the LSTM input x_t, ``zh_linear``, ``zs_linear``, the key sums and the
    output MLP's tanh (``mlp_in_tanh_dp``).

    Inputs: ``{"images": (B, S, S, 3)}`` or ``{"features": (B, K, D)}``, and
    ``{"words": (B, N, T)}``, N captions per image (image-side work runs once per image).
    With ``config.variable_regions`` also ``{"num_regions": (B,) int32}``: image b has
    ``num_regions[b]`` (at least 1) real regions, the first rows of its ``features``, padded
    to K; the boolean mask (B, K) ``arange(K) < num_regions`` makes v_g the mean of the real
    regions and gives the padded ones exactly zero attention, so the logits are those of the
    image alone with K = ``num_regions[b]``.
    Output: logits (B, N, T, V) float32, where ``words[..., t]`` predicts word t + 1.

    Decoding uses ``encode`` once per image, ``initial_state``, then ``step`` per word.

    Args:
        config: a ``CaptionerConfig`` (or its dict); stored by ``get_config``.
        load_encoder_weights: load ``config.cnn_weights`` into the CNN; False when the weights
            will be restored from a checkpoint anyway.
        feature_statistics: ``(scale, center)`` for ``FeatureStandardization``, from a
            checkpoint saved when they were part of the config (``from_config`` passes them).
    """

    def __init__(self, config, load_encoder_weights=True, feature_statistics=None, **kwargs):
        if isinstance(config, dict):
            config = CaptionerConfig.from_dict(config)
        dropout_rate = config.dr_ratio if config.dropout_layers else 0.0
        with policy_scope(config.dtype_policy):
            # === Layers ===
            self.encoder = None
            if config.input_images:
                self.encoder = build_encoder(
                    config.cnn, config.cnn_weights if load_encoder_weights else None,
                    config.image_size, config.cnn_layer)
                num_regions, feature_dim = self.encoder.output.shape[1:]
                config = config.replace(num_regions=num_regions, feature_dim=feature_dim)
            self.standardize = None
            if config.standardize != "none":
                self.standardize = FeatureStandardization(
                    center=config.standardize == "position", statistics=feature_statistics,
                    name="standardize")
            self.position_embedding = None
            if config.position_embedding:
                self.position_embedding = PositionEmbedding(name="position_embedding")
            self.pool = keras.layers.GlobalAveragePooling1D(name="Vg")
            self.global_projection = keras.layers.Dense(config.emb_dim, activation="relu",
                                                        name="Vg_")
            self.region_projection = keras.layers.Dense(config.z_dim, activation="relu",
                                                        name="Vi")
            self.region_keys = keras.layers.Dense(config.emb_dim, activation="relu",
                                                  name="Vi_emb")
            self.word_embedding = keras.layers.Embedding(config.vocabulary.size, config.emb_dim,
                                                         name="word_embedding")
            self.word_relu = keras.layers.Activation("relu", name="word_relu")
            self.dropout = keras.layers.Dropout(dropout_rate, name="dropout")
            self.drop_lstm_input = config.dropout_layers
            # imcap_keras' LSTM_sent(dropout_W=dr, dropout_U=dr): its input dropout never took
            # effect (Keras 1 ignored dropout_W on that path); one recurrent mask per gate
            self.lstm = SentinelLSTM(config.lstm_dim, dropout=0.0,
                                     recurrent_dropout=config.dr_ratio,
                                     use_sentinel=config.use_sentinel and config.attention, name="hs")
            self.attention = None
            if config.attention:
                self.attention = AdaptiveAttention(
                    config.z_dim, config.emb_dim, use_sentinel=config.use_sentinel,
                    dropout=dropout_rate, sentinel_dropout=config.sent_dropout, name="attention")
                self.mlp = keras.layers.Dense(config.emb_dim, activation="tanh", name="mlp")
            self.logits = keras.layers.Dense(config.vocabulary.size, name="logits")
            self.logits_float32 = keras.layers.Activation("linear", dtype="float32",
                                                          name="logits_float32")
            self.expand_captions = CaptionExpansion(name="expand_captions")
            self.collapse_captions = CaptionCollapse(name="collapse_captions", dtype="float32")

            # === Functional model ===
            if config.input_images:
                image_input = keras.Input((config.image_size, config.image_size, 3),
                                          name="images")
                features = self.encoder(image_input)
            else:
                image_input = keras.Input((config.num_regions, config.feature_dim),
                                          name="features")
                features = image_input
            words = keras.Input((None, None), dtype="int32", name="words")
            inputs = {"images" if config.input_images else "features": image_input,
                      "words": words}
            mask = None
            if config.variable_regions:
                inputs["num_regions"] = keras.Input((), dtype="int32", name="num_regions")
                mask = region_mask(inputs["num_regions"], config.num_regions)
            logits = self._logits_graph(features, words, mask)
            super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.config = config

    def _logits_graph(self, features, words, mask=None):
        """The teacher-forced graph from region features, (B, N, T) words and the (B, K)
        region mask (or None) to logits."""
        global_vector, regions, keys = self._image_side(features, mask)
        expanded = self.expand_captions(
            [words, global_vector, regions, keys] + ([] if mask is None else [mask]))
        logits, _ = self._caption_side(*expanded[:4],
                                       region_mask=None if mask is None else expanded[4])
        return self.collapse_captions([logits, words])

    def features_logits(self, features, words, num_regions=None):
        """Teacher-forced logits (B, N, T, V) float32 from region features (B, K, D), words
        (B, N, T) and, with ``variable_regions``, ``num_regions`` (B,), without dropout: what
        ``features_model()`` computes, as a function (self-critical training's log p)."""
        mask = None if num_regions is None else region_mask(num_regions, ops.shape(features)[1])
        return self._logits_graph(features, words, mask)

    def features_model(self):
        """A model from precomputed region features (``{"features", "words"}``) to logits that
        shares this captioner's decoder layers, and so its weights: training it trains this
        captioner's decoder without running the CNN (stage 1 from a feature cache)."""
        if self.encoder is None:
            return self
        features = keras.Input((self.config.num_regions, self.config.feature_dim),
                               name="features")
        words = keras.Input((None, None), dtype="int32", name="words")
        return keras.Model({"features": features, "words": words},
                           self._logits_graph(features, words), name="captioner_on_features")

    def _image_side(self, features, mask=None, training=None):
        """v_g (B, emb), regions (B, K, z), keys (B, K, emb): the image-side projections; v_g
        averages the real regions only where a (B, K) ``mask`` is given."""
        if self.standardize is not None:
            features = self.standardize(features)
        if self.position_embedding is not None:
            features = self.position_embedding(features)
        pooled = self.pool(features) if mask is None else self.pool(features, mask=mask)
        global_vector = self.dropout(self.global_projection(pooled), training=training)
        regions = self.dropout(self.region_projection(features), training=training)
        return global_vector, regions, self.region_keys(regions)

    def _caption_side(self, words, global_vector, regions, keys, training=None,
                      region_mask=None):
        """Logits (B, T, V) and attention weights (B, T, K [+ 1]) or None, for all steps."""
        embedded = self.dropout(self.word_relu(self.word_embedding(words)), training=training)
        if self.drop_lstm_input:
            # --dr also drops the LSTM input x_t = [w_t ; v_g] at every step (imcap_keras'
            # lstm_in), so v_g is joined to each step here rather than projected once
            steps = ops.ones_like(embedded[..., :1])  # (B, T, 1)
            lstm_input = self.dropout(
                ops.concatenate([embedded, steps * ops.expand_dims(global_vector, 1)], axis=-1),
                training=training)
            outputs = self.lstm(lstm_input, training=training)
        else:
            outputs = self.lstm([embedded, global_vector], training=training)
        hidden, sentinel = outputs[0], outputs[1] if self.lstm.use_sentinel else None
        return self._output(hidden, sentinel, regions, keys, training, region_mask)

    def _output(self, hidden, sentinel, regions, keys, training=None, region_mask=None):
        if self.attention is None:
            return self.logits_float32(self.logits(hidden)), None
        attention_inputs = [hidden, regions, keys]
        if self.attention.use_sentinel:
            attention_inputs.append(sentinel)
        masked = {} if region_mask is None else {"region_mask": region_mask}
        attended, weights = self.attention(attention_inputs, training=training, **masked)
        out = self.dropout(self.mlp(attended), training=training)  # imcap_keras' mlp_in_tanh_dp
        return self.logits_float32(self.logits(out)), weights

    # --- decoding ------------------------------------------------------------------------------

    def encode(self, images_or_features, from_features=False, num_regions=None):
        """Image-side tensors for decoding, computed once per image (no dropout): a dict of
        (B, ...) tensors, ``region_mask`` (B, K) boolean among them with ``variable_regions``.

        Takes what the model takes (images, or features for a features captioner), or region
        features with ``from_features=True``; ``num_regions`` (B,) int, the real regions of
        each image, exactly when ``config.variable_regions``.
        """
        if self.config.variable_regions and num_regions is None:
            raise ValueError("a captioner with variable_regions=True needs num_regions (B,), "
                             "got None.")
        if num_regions is not None and not self.config.variable_regions:
            raise ValueError("num_regions needs a captioner with variable_regions=True, got "
                             "variable_regions=False.")
        features = images_or_features
        if self.encoder is not None and not from_features:
            features = self.encoder(images_or_features, training=False)
        mask = None if num_regions is None else region_mask(num_regions, ops.shape(features)[1])
        global_vector, regions, keys = self._image_side(features, mask, training=False)
        encoded = {"regions": regions, "keys": keys,
                   "lstm_constant": self.lstm.project_constant(global_vector)}
        if mask is not None:
            encoded["region_mask"] = mask
        return encoded

    def initial_state(self, batch_size):
        """The zero LSTM state ``[h, m]`` for ``batch_size`` captions."""
        zeros = ops.zeros((batch_size, self.config.lstm_dim), self.lstm.compute_dtype)
        return [zeros, zeros]

    def step_weights(self):
        """Weights ``step`` would otherwise join and cast at every step; a decoder computes
        them once per decode and passes them to each ``step``."""
        return self.lstm.step_weights(self.config.emb_dim)

    def step(self, encoded, previous_words, state, weights=None):
        """One decoding step for a batch of captions.

        Args:
            encoded: ``encode``'s output, one row per caption being decoded.
            previous_words: (B,) int word ids (``<start>`` first).
            state: ``[h, m]``.
            weights: ``step_weights()``, or None to compute them here.

        Returns:
            ``(log_probabilities (B, V) float32, new state, attention weights alpha (B, K)
            float32 or None, sentinel weight beta (B,) float32 or None)``; alpha is the
            attention over the regions (summing to 1 - beta with the sentinel), exactly 0.0 on
            padded regions.
        """
        embedded = self.word_relu(self.word_embedding(previous_words))
        hidden, sentinel, state = self.lstm.step(embedded, state, encoded["lstm_constant"],
                                                 weights)
        if sentinel is not None:
            sentinel = ops.expand_dims(sentinel, 1)
        logits, weights = self._output(ops.expand_dims(hidden, 1), sentinel, encoded["regions"],
                                       encoded["keys"], training=False,
                                       region_mask=encoded.get("region_mask"))
        log_probabilities = ops.log_softmax(logits[:, 0], axis=-1)
        alpha = beta = None
        if weights is not None:
            weights = weights[:, 0]
            num_regions = self.config.num_regions
            alpha = weights[:, :num_regions]
            if self.config.use_sentinel:
                beta = weights[:, num_regions]
        return log_probabilities, state, alpha, beta

    # --- config --------------------------------------------------------------------------------

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        values = dict(config.pop("config"))
        statistics = legacy_statistics(values)  # a checkpoint from before they were weights
        return cls(values, load_encoder_weights=False, feature_statistics=statistics, **config)

"""Decoding captions with the captioner's step function (greedy here; one step function for
every strategy)."""

import numpy as np
import tensorflow as tf
from keras import ops


class GreedyDecoder:
    """Batched greedy decoding inside one compiled function.

    Starts from ``<start>`` (the seed fed word 0) and takes the most likely word at each step,
    never padding or ``<start>``, for ``max_length - 1`` steps (the caption length of the
    training data includes ``<start>``); words after ``<eos>`` are dropped by ``to_captions``.

    Args:
        model: a ``Captioner``.
        max_length: caption length with both markers (the seed's ``-seqlen``).
        from_features: the inputs are region features, not what the model takes.
    """

    def __init__(self, model, max_length=None, from_features=False):
        self.model = model
        self.from_features = from_features
        self.max_length = max_length or model.config.max_length
        vocab_size = model.config.vocab_size
        banned = np.zeros(vocab_size, dtype=np.float32)
        banned[[0, model.config.start_id]] = -np.inf
        self.banned = tf.constant(banned)
        self._decode = tf.function(self._decode_graph, reduce_retracing=True)

    def _decode_graph(self, inputs):
        model = self.model
        encoded = model.encode(inputs, from_features=self.from_features)
        batch = tf.shape(inputs)[0]
        words = tf.fill((batch,), model.config.start_id)
        state = model.initial_state(batch)
        chosen = []
        for _ in range(self.max_length - 1):
            log_probs, state, _, _ = model.step(encoded, words, state)
            words = tf.cast(ops.argmax(log_probs + self.banned, axis=-1), tf.int32)
            chosen.append(words)
        return tf.stack(chosen, axis=1)

    def __call__(self, inputs):
        """Word ids (B, max_length - 1) for a batch of images or features."""
        return self._decode(inputs).numpy()

    def to_captions(self, ids):
        """Strings for rows of word ids, stopping at ``<eos>``."""
        vocabulary, end = self.model.config.vocabulary, self.model.config.end_id
        captions = []
        for row in ids:
            words = []
            for word_id in row:
                if word_id == end or word_id == 0:
                    break
                words.append(vocabulary[word_id - 1])
            captions.append(" ".join(words))
        return captions

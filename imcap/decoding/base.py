"""What every decoder shares: the step with banned words, the encoded images, the conversion
of word ids to words, and clearing what follows ``<eos>``."""

import numpy as np
import tensorflow as tf


# words a caption should not end with (self-critical.pytorch's -remove_bad_endings list)
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on",
               "upon", "near", "to", "is", "are", "am")


def _any_batch(arguments):
    """TensorSpecs of ``_decode_graph``'s arguments, the batch dimension of the inputs (the
    first) left open; the others (a seed) as they are. Reads shapes and dtypes only (NumPy
    arrays are not copied into tensors for it)."""
    def spec(value, open_batch=False):
        if not hasattr(value, "dtype"):
            value = tf.convert_to_tensor(value)
        shape = list(value.shape)
        return tf.TensorSpec([None] + shape[1:] if open_batch else shape, tf.as_dtype(value.dtype))

    inputs, *rest = arguments
    return (tf.nest.map_structure(lambda x: spec(x, open_batch=True), inputs),
            *tf.nest.map_structure(spec, rest))


class Decoder:
    """What the decoders share: inputs, banned words, captions from word ids.

    Inputs: a batch of what the model takes (images, or features for a features captioner) or,
    with ``from_features``, region features (B, K, D). A captioner with ``variable_regions``
    also needs ``num_regions`` (B,) int, the real regions of each image (at least 1; its
    features padded to K rows): ``decode(features, num_regions=counts)``, likewise
    ``graph`` and ``__call__``. Every decoder carries the region mask along with the other
    encoded tensors (beam search repeats it per beam), and the alpha it returns is exactly 0.0
    on padded regions.

    Args:
        model: a ``Captioner``.
        max_length: caption length with both markers (imcap_keras' ``-seqlen``).
        from_features: the inputs are region features, not what the model takes.
        suppress_eos: never emit ``<eos>`` (every caption runs ``max_length - 1`` steps).
        ban_unk: never emit ``UNK`` (``-ban_unk``).
        remove_bad_endings: never end a caption (``<eos>``) right after one of
            ``BAD_ENDINGS`` (``-remove_bad_endings``, as self-critical.pytorch's option); a
            caption cut by ``max_length`` can still end in one.
        block_trigrams: never choose a word that would repeat a trigram of the caption's own
            words (``--block_trigrams``, as self-critical.pytorch's option).
    """

    def __init__(self, model, max_length=None, from_features=False, suppress_eos=False,
                 ban_unk=False, remove_bad_endings=False, block_trigrams=False):
        self.model = model
        self.from_features = from_features
        self.max_length = max_length or model.config.max_length
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 (<start> and a word), got "
                             f"{self.max_length}")
        self.steps = self.max_length - 1
        config, vocabulary = model.config, model.config.vocabulary
        self.vocabulary = vocabulary
        self.end_id, self.start_id = vocabulary.end_id, vocabulary.start_id
        self.num_regions = config.num_regions if config.attention else 0
        banned = np.zeros(vocabulary.size, dtype=np.float32)
        banned[[0, self.start_id] + ([self.end_id] if suppress_eos else [])] = -np.inf
        if ban_unk and vocabulary.unk_id is not None:
            banned[vocabulary.unk_id] = -np.inf
        self.banned = tf.constant(banned)
        self.block_trigrams = block_trigrams
        self.bad_ending = None  # (V,) bool: after these words, no <eos>
        if remove_bad_endings:
            flags = np.zeros(vocabulary.size, dtype=bool)
            ids = [vocabulary.word_id(w) for w in BAD_ENDINGS]
            flags[[i for i in ids if i is not None]] = True
            self.bad_ending = tf.constant(flags)
            self.is_end = tf.constant(np.arange(vocabulary.size) == self.end_id)
        banned[self.end_id] = -np.inf
        self.banned_first = tf.constant(banned)  # no empty captions
        self._calls = 0
        self._decode = tf.function(self._decode_graph, reduce_retracing=True)

    def _step(self, encoded, words, state, t, weights=None, history=None):
        """Log-probabilities with banned words at -inf (and ``<eos>`` at step 0), the new state,
        alpha (N, R) and beta (N,) (zeros where the model has none). ``history`` (N, S): the
        words chosen at steps 0..t-1 of each row (for ``block_trigrams``)."""
        log_probs, state, alpha, beta = self.model.step(encoded, words, state, weights)
        rows = tf.shape(words)[0]
        if alpha is None:
            alpha = tf.zeros((rows, 0), tf.float32)
        if beta is None:
            beta = tf.zeros((rows,), tf.float32)
        banned = tf.where(tf.equal(t, 0), self.banned_first, self.banned)
        log_probs = log_probs + banned
        if self.bad_ending is not None:  # the previous word is a bad ending: no <eos> now
            after_bad = tf.gather(self.bad_ending, words)
            log_probs = tf.where(after_bad[:, None] & self.is_end[None, :],
                                 tf.constant(-np.inf, log_probs.dtype), log_probs)
        if self.block_trigrams and history is not None:
            log_probs = tf.where(repeated_trigrams(history, t, self.vocabulary.size),
                                 tf.constant(-np.inf, log_probs.dtype), log_probs)
        return (log_probs, state, tf.cast(alpha, tf.float32), tf.cast(beta, tf.float32))

    def _encode(self, inputs, repeat=1):
        """``encode``'s tensors, each image's row repeated ``repeat`` times (image-major:
        ``tf.repeat``'s order), so that the image side runs once per image."""
        if isinstance(inputs, dict):  # what _with_counts made
            encoded = self.model.encode(inputs["inputs"], from_features=self.from_features,
                                        num_regions=inputs["num_regions"])
        else:
            encoded = self.model.encode(inputs, from_features=self.from_features)
        if repeat == 1:
            return encoded
        return {key: tf.repeat(value, repeat, axis=0) for key, value in encoded.items()}

    @staticmethod
    def _with_counts(inputs, num_regions):
        """The inputs of ``_decode_graph``: ``inputs``, or with ``num_regions`` both in a dict."""
        return inputs if num_regions is None else {"inputs": inputs, "num_regions": num_regions}

    @staticmethod
    def _batch_size(inputs):
        """B, from the inputs of ``_decode_graph``."""
        return tf.shape(tf.nest.flatten(inputs)[0])[0]

    def _arguments(self, inputs, call):
        """The arguments of ``_decode_graph`` for the ``call``-th decode."""
        return (inputs,)

    def graph(self, inputs, num_regions=None, call=0, repeat=1):
        """The decoding as tensors, to call inside another ``tf.function`` (e.g. a serving
        signature or a training step): the same dict as ``decode``. ``call`` (an int or a
        scalar tensor) is the sampler's call count, part of its seed. ``repeat`` > 1 (greedy
        and sampling) decodes each image ``repeat`` times, as ``tf.repeat(inputs, repeat,
        axis=0)`` would, with each image encoded once: (B x repeat) rows, image-major."""
        arguments = self._arguments(self._with_counts(inputs, num_regions), call)
        if repeat == 1:
            return self._decode_graph(*arguments)
        return self._decode_graph(*arguments, repeat=repeat)

    def decode(self, inputs, num_regions=None):
        """A dict of NumPy arrays for a batch of images (or features, and their
        ``num_regions``): ``words`` (B, L) word ids, 0 after ``<eos>``; ``alpha`` (B, L, K);
        ``beta`` (B, L) (zeros without the sentinel); ``log_prob`` (B,) of each caption (its
        ``<eos>`` included)."""
        self._calls += 1
        arguments = self._arguments(self._with_counts(inputs, num_regions), self._calls)
        if self._calls == 1:
            # one trace for every batch size: without it, a split's last, smaller batch made
            # TensorFlow trace the whole decoding again
            self._decode.get_concrete_function(*_any_batch(arguments))
        outputs = self._decode(*arguments)
        return {key: value.numpy() for key, value in outputs.items()}

    def __call__(self, inputs, num_regions=None):
        """Word ids (B, L) for a batch of images or features (and their ``num_regions``)."""
        return self.decode(inputs, num_regions)["words"]

    def to_words(self, ids, keep_end=False):
        """Lists of words for rows of word ids, stopping at ``<eos>`` (kept with ``keep_end``)
        or padding."""
        return [self.vocabulary.ids_to_words(row, keep_end) for row in ids]

    def to_captions(self, ids):
        """Strings for rows of word ids, stopping at ``<eos>``."""
        return [" ".join(words) for words in self.to_words(ids)]


def _clear_after_end(outputs, end_id):
    """Zeros the words, alpha and beta after the first ``<eos>`` of each caption."""
    words = outputs["words"]
    ended_before = tf.cumsum(tf.cast(tf.equal(words, end_id), tf.int32), axis=1, exclusive=True)
    after = ended_before > 0
    return dict(outputs, words=tf.where(after, tf.zeros_like(words), words),
                beta=tf.where(after, tf.zeros_like(outputs["beta"]), outputs["beta"]),
                alpha=tf.where(after[..., None], tf.zeros_like(outputs["alpha"]),
                               outputs["alpha"]))


def repeated_trigrams(history, t, vocabulary_size):
    """(N, V) bool: the words w that would make (h[t-2], h[t-1], w) a trigram already in
    ``history[:, :t]`` (N, S), the words chosen at steps 0..t-1 of each row."""
    rows, steps = tf.shape(history)[0], tf.shape(history)[1]
    previous = tf.gather(history, tf.maximum(t - 2, 0), axis=1)  # h[t-2], h[t-1]
    last = tf.gather(history, tf.maximum(t - 1, 0), axis=1)
    start = tf.range(steps - 2)  # trigram (h[i], h[i+1], h[i+2]) complete when i + 2 <= t - 1
    match = (start[None, :] + 2 <= t - 1) & tf.equal(history[:, :-2], previous[:, None]) \
        & tf.equal(history[:, 1:-1], last[:, None])
    row = tf.broadcast_to(tf.range(rows)[:, None], tf.shape(match))
    indices = tf.stack([row, history[:, 2:]], axis=-1)
    hits = tf.tensor_scatter_nd_max(tf.zeros((rows, vocabulary_size), tf.int32), indices,
                                    tf.cast(match, tf.int32))
    return hits > 0

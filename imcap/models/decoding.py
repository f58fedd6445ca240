"""Decoding captions with the captioner's step function: greedy, sampling and beam search, each
one compiled function over a batch of images, starting from ``<start>`` (the seed fed word 0).

Every decoder runs at most ``max_length - 1`` steps (the caption length of the training data
includes ``<start>``; ``-seqlen``), never emits padding or ``<start>``, stops early once every
caption has ended, and returns per word the attention over the regions (alpha) and the sentinel
weight (beta) of the chosen path. ``suppress_eos`` forbids ``<eos>`` (benchmarks use it to run
every step). A caption has at least one word: ``<eos>`` cannot come first.
"""

import numpy as np
import tensorflow as tf


class Decoder:
    """What the decoders share: inputs, banned words, captions from word ids.

    Args:
        model: a ``Captioner``.
        max_length: caption length with both markers (the seed's ``-seqlen``).
        from_features: the inputs are region features, not what the model takes.
        suppress_eos: never emit ``<eos>`` (every caption runs ``max_length - 1`` steps).
    """

    def __init__(self, model, max_length=None, from_features=False, suppress_eos=False):
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
        self.banned = tf.constant(banned)
        banned[self.end_id] = -np.inf
        self.banned_first = tf.constant(banned)  # no empty captions
        self._calls = 0
        self._decode = tf.function(self._decode_graph, reduce_retracing=True)

    def _step(self, encoded, words, state, t, weights=None):
        """Log-probabilities with banned words at -inf (and ``<eos>`` at step 0), the new state,
        alpha (N, R) and beta (N,) (zeros where the model has none)."""
        log_probs, state, alpha, beta = self.model.step(encoded, words, state, weights)
        rows = tf.shape(words)[0]
        if alpha is None:
            alpha = tf.zeros((rows, 0), tf.float32)
        if beta is None:
            beta = tf.zeros((rows,), tf.float32)
        banned = tf.where(tf.equal(t, 0), self.banned_first, self.banned)
        return (log_probs + banned, state, tf.cast(alpha, tf.float32),
                tf.cast(beta, tf.float32))

    def _encode(self, inputs):
        return self.model.encode(inputs, from_features=self.from_features)

    def _arguments(self, inputs, call):
        """The arguments of ``_decode_graph`` for the ``call``-th decode."""
        return (inputs,)

    def graph(self, inputs):
        """The decoding as tensors, to call inside another ``tf.function`` (e.g. a serving
        signature): the same dict as ``decode``."""
        return self._decode_graph(*self._arguments(inputs, 0))

    def decode(self, inputs):
        """A dict of NumPy arrays for a batch of images (or features): ``words`` (B, L) word
        ids, 0 after ``<eos>``; ``alpha`` (B, L, K); ``beta`` (B, L) (zeros without the
        sentinel); ``log_prob`` (B,) of each caption (its ``<eos>`` included)."""
        self._calls += 1
        outputs = self._decode(*self._arguments(inputs, self._calls))
        return {key: value.numpy() for key, value in outputs.items()}

    def __call__(self, inputs):
        """Word ids (B, L) for a batch of images or features."""
        return self.decode(inputs)["words"]

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


class GreedyDecoder(Decoder):
    """Batched greedy decoding (the most likely word at each step), or sampling from the
    softmax at ``temperature`` (> 0) when given; ``seed`` makes sampling reproducible."""

    def __init__(self, model, max_length=None, from_features=False, suppress_eos=False,
                 temperature=None, seed=0):
        self.temperature = temperature if temperature and temperature > 0 else None
        self.seed = seed
        super().__init__(model, max_length, from_features, suppress_eos)

    def _arguments(self, inputs, call):
        return inputs, tf.constant([self.seed, call], tf.int64)

    def _choose(self, log_probs, seed, step):
        if self.temperature is None:
            return tf.cast(tf.argmax(log_probs, axis=-1), tf.int32)
        scaled = log_probs / self.temperature
        sample_seed = tf.stack([seed[0], seed[1] * 1000 + tf.cast(step, tf.int64)])
        return tf.cast(tf.random.stateless_categorical(scaled, 1, sample_seed)[:, 0], tf.int32)

    def _decode_graph(self, inputs, seed):
        model = self.model
        encoded = self._encode(inputs)
        weights = self.model.step_weights()  # once per decode, not per step
        batch = tf.shape(inputs)[0]
        steps = self.steps
        words = tf.fill((batch,), tf.constant(self.start_id, tf.int32))
        state = model.initial_state(batch)
        ended = tf.zeros((batch,), tf.bool)
        total = tf.zeros((batch,), tf.float32)
        chosen = tf.TensorArray(tf.int32, size=steps, element_shape=(None,))
        alphas = tf.TensorArray(tf.float32, size=steps, element_shape=(None, self.num_regions))
        betas = tf.TensorArray(tf.float32, size=steps, element_shape=(None,))

        def body(t, words, state, ended, total, chosen, alphas, betas):
            log_probs, state, alpha, beta = self._step(encoded, words, state, t, weights)
            words = self._choose(log_probs, seed, t)
            picked = tf.gather(log_probs, words, batch_dims=1)
            total += tf.where(ended, tf.zeros_like(picked), picked)
            ended = ended | tf.equal(words, self.end_id)
            return (t + 1, words, state, ended, total, chosen.write(t, words),
                    alphas.write(t, alpha), betas.write(t, beta))

        def running(t, words, state, ended, *rest):
            return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(ended)))

        t, _, _, _, total, chosen, alphas, betas = tf.while_loop(
            running, body, (tf.constant(0), words, state, ended, total, chosen, alphas, betas))
        pad = steps - t  # steps skipped once every caption had ended
        words = tf.pad(tf.transpose(chosen.stack()[:t]), [[0, 0], [0, pad]])
        return _clear_after_end({
            "words": words,
            "alpha": tf.pad(tf.transpose(alphas.stack()[:t], [1, 0, 2]),
                            [[0, 0], [0, pad], [0, 0]]),
            "beta": tf.pad(tf.transpose(betas.stack()[:t]), [[0, 0], [0, pad]]),
            "log_prob": total}, self.end_id)


class BeamSearchDecoder(Decoder):
    """Batched beam search over images x beams, in log-probabilities, in one compiled loop.

    Each step extends every live beam with each word; of the best ``2 x beam_size``
    extensions per image, those ending in ``<eos>`` within the first ``beam_size`` become
    finished hypotheses (the best one per image is kept) and the best ``beam_size`` others stay
    live. A finished hypothesis is kept until no live beam can beat it: an image is done when
    its best finished score is at least the best live score (log-probabilities only fall;
    with length normalisation, at least the best live score over ``L ** length_penalty``), and
    the loop ends when every image is done. At the last step live beams compete with the
    finished ones. ``beam_size=1`` gives exactly the greedy captions.

    Scores are summed log-probabilities, divided by ``length ** length_penalty`` (0: none;
    length counts the words and ``<eos>``) when comparing hypotheses of different lengths.
    """

    def __init__(self, model, beam_size=3, max_length=None, from_features=False,
                 suppress_eos=False, length_penalty=0.0):
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {beam_size}")
        self.beam_size, self.length_penalty = beam_size, float(length_penalty)
        super().__init__(model, max_length, from_features, suppress_eos)

    def _normalize(self, scores, length):
        if not self.length_penalty:
            return scores
        return scores / tf.pow(tf.cast(length, tf.float32), self.length_penalty)

    def _decode_graph(self, inputs):
        model, beams, steps = self.model, self.beam_size, self.steps
        encoded = self._encode(inputs)
        batch = tf.shape(inputs)[0]
        rows = batch * beams
        encoded = {key: tf.repeat(value, beams, axis=0) for key, value in encoded.items()}
        weights = self.model.step_weights()  # once per decode, not per step
        regions = self.num_regions
        neg_inf = tf.constant(-np.inf, tf.float32)

        def by_beam(x):  # (B * beams, ...) -> (B, beams, ...)
            return tf.reshape(x, tf.concat([[batch, beams], tf.shape(x)[1:]], 0))

        def by_row(x):
            return tf.reshape(x, tf.concat([[rows], tf.shape(x)[2:]], 0))

        initial = {
            "words": tf.fill((rows,), tf.constant(self.start_id, tf.int32)),
            "state": model.initial_state(rows),
            # only the first beam is live at the start: the others would repeat it
            "scores": tf.tile(tf.concat([[0.0], tf.fill((beams - 1,), neg_inf)], 0)[None],
                              [batch, 1]),
            "seqs": tf.zeros((batch, beams, steps), tf.int32),
            "alphas": tf.zeros((batch, beams, steps, regions), tf.float32),
            "betas": tf.zeros((batch, beams, steps), tf.float32),
            "best_score": tf.fill((batch,), neg_inf),
            "best_raw": tf.fill((batch,), neg_inf),
            "best_seq": tf.zeros((batch, steps), tf.int32),
            "best_alpha": tf.zeros((batch, steps, regions), tf.float32),
            "best_beta": tf.zeros((batch, steps), tf.float32),
            "done": tf.zeros((batch,), tf.bool),
        }
        positions = tf.range(steps)

        def write(history, t, values):
            """history (B, beams, steps, ...) with ``values`` (B, beams, ...) at step t."""
            at_t = tf.reshape(tf.equal(positions, t),
                              [1, 1, steps] + [1] * (len(history.shape) - 3))
            return tf.where(at_t, tf.expand_dims(values, 2), history)

        def body(t, s):
            log_probs, state, alpha, beta = self._step(encoded, s["words"], s["state"], t,
                                                       weights)
            # best 2 x beams words per beam, then the best 2 x beams extensions per image
            per_beam = min(2 * beams, model.config.vocabulary.size)
            width = min(2 * beams, beams * per_beam)
            word_scores, word_ids = tf.math.top_k(log_probs, k=per_beam)
            totals = s["scores"][:, :, None] + by_beam(word_scores)  # (B, beams, per_beam)
            flat_totals = tf.reshape(totals, (batch, -1))
            top_totals, top_index = tf.math.top_k(flat_totals, k=width)
            origin = top_index // per_beam
            top_words = tf.gather(tf.reshape(by_beam(word_ids), (batch, -1)), top_index,
                                  batch_dims=1)
            is_end = tf.equal(top_words, self.end_id)
            rank = tf.range(width)[None, :]

            # histories of each candidate's origin beam, this step's word and weights added
            seqs = write(tf.gather(s["seqs"], origin, batch_dims=1), t, top_words)
            alphas = write(tf.gather(s["alphas"], origin, batch_dims=1), t,
                           tf.gather(by_beam(alpha), origin, batch_dims=1))
            betas = write(tf.gather(s["betas"], origin, batch_dims=1), t,
                          tf.gather(by_beam(beta), origin, batch_dims=1))

            # finished: <eos> among the first `beams` candidates, if better than the kept one
            finished = tf.where(is_end & (rank < beams) & ~s["done"][:, None],
                                self._normalize(top_totals, t + 1), neg_inf)
            best_new = tf.argmax(finished, axis=1, output_type=tf.int32)
            best_new_score = tf.reduce_max(finished, axis=1)
            better = best_new_score > s["best_score"]

            def keep_best(new, old):
                new = tf.gather(new, best_new, batch_dims=1)
                mask = tf.reshape(better, [-1] + [1] * (len(old.shape) - 1))
                return tf.where(mask, new, old)

            # live: the best `beams` candidates that did not end
            live_rank = tf.where(is_end, width + rank, rank)
            _, live = tf.math.top_k(-live_rank, k=beams)
            live = tf.sort(live, axis=1)
            scores = tf.gather(top_totals, live, batch_dims=1)
            live_origin = tf.gather(origin, live, batch_dims=1)
            state = [by_row(tf.gather(by_beam(x), live_origin, batch_dims=1)) for x in state]
            best_score = tf.where(better, best_new_score, s["best_score"])
            bound = self._normalize(tf.reduce_max(scores, axis=1), steps) \
                if self.length_penalty else tf.reduce_max(scores, axis=1)
            return t + 1, {
                "words": tf.reshape(tf.gather(top_words, live, batch_dims=1), (rows,)),
                "state": state, "scores": scores,
                "seqs": tf.gather(seqs, live, batch_dims=1),
                "alphas": tf.gather(alphas, live, batch_dims=1),
                "betas": tf.gather(betas, live, batch_dims=1),
                "best_score": best_score,
                "best_raw": keep_best(top_totals, s["best_raw"]),
                "best_seq": keep_best(seqs, s["best_seq"]),
                "best_alpha": keep_best(alphas, s["best_alpha"]),
                "best_beta": keep_best(betas, s["best_beta"]),
                "done": s["done"] | (best_score >= bound),
            }

        def running(t, s):
            return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(s["done"])))

        any_batch = tf.nest.map_structure(lambda x: tf.TensorShape([None] + x.shape[1:]), initial)
        t, s = tf.while_loop(running, body, (tf.constant(0), initial),
                             shape_invariants=(tf.TensorShape([]), any_batch))
        # after the last step, the best live beam (max_length - 1 words, no <eos>) competes
        live_score = self._normalize(s["scores"][:, 0], steps)
        use_live = tf.logical_and(tf.equal(t, steps), live_score > s["best_score"])

        def pick(live, best):
            mask = tf.reshape(use_live, [-1] + [1] * (len(best.shape) - 1))
            return tf.where(mask, live[:, 0], best)

        return _clear_after_end({"words": pick(s["seqs"], s["best_seq"]),
                                 "alpha": pick(s["alphas"], s["best_alpha"]),
                                 "beta": pick(s["betas"], s["best_beta"]),
                                 "log_prob": pick(s["scores"], s["best_raw"])}, self.end_id)


def make_decoder(model, beam_size=1, temperature=None, max_length=None, length_penalty=0.0,
                 seed=0, from_features=False, suppress_eos=False):
    """Sampling (``temperature`` > 0), beam search (``beam_size`` > 1) or greedy decoding."""
    if temperature is not None and temperature > 0:
        return GreedyDecoder(model, max_length, from_features, suppress_eos,
                             temperature=temperature, seed=seed)
    if beam_size > 1:
        return BeamSearchDecoder(model, beam_size, max_length, from_features, suppress_eos,
                                 length_penalty=length_penalty)
    return GreedyDecoder(model, max_length, from_features, suppress_eos)

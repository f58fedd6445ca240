"""Beam search, with an optional length penalty."""

import numpy as np
import tensorflow as tf

from imcap.decoding.base import Decoder, _clear_after_end


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
                 suppress_eos=False, length_penalty=0.0, **options):
        if beam_size < 1:
            raise ValueError(f"beam size must be at least 1, got {beam_size}")
        self.beam_size, self.length_penalty = beam_size, float(length_penalty)
        super().__init__(model, max_length, from_features, suppress_eos, **options)

    def _normalize(self, scores, length):
        if not self.length_penalty:
            return scores
        return scores / tf.pow(tf.cast(length, tf.float32), self.length_penalty)

    def _decode_graph(self, inputs):
        model, beams, steps = self.model, self.beam_size, self.steps
        encoded = self._encode(inputs)
        batch = self._batch_size(inputs)
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
                                                       weights, by_row(s["seqs"]))
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

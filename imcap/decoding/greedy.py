"""Greedy decoding, and sampling at a temperature: the same loop, another choice per step."""

import tensorflow as tf

from imcap.decoding.base import Decoder, _clear_after_end


class GreedyDecoder(Decoder):
    """Batched greedy decoding: the most likely word at each step."""

    def _arguments(self, inputs, call):
        return inputs, _seed(0, call)

    def _choose(self, log_probs, seed, step):
        return tf.cast(tf.argmax(log_probs, axis=-1), tf.int32)

    def _decode_graph(self, inputs, seed, repeat=1):
        model = self.model
        encoded = self._encode(inputs, repeat)
        weights = self.model.step_weights()  # once per decode, not per step
        batch = self._batch_size(inputs) * repeat
        steps = self.steps
        words = tf.fill((batch,), tf.constant(self.start_id, tf.int32))
        state = model.initial_state(batch)
        ended = tf.zeros((batch,), tf.bool)
        total = tf.zeros((batch,), tf.float32)
        chosen = tf.TensorArray(tf.int32, size=steps, element_shape=(None,))
        alphas = tf.TensorArray(tf.float32, size=steps, element_shape=(None, self.num_regions))
        betas = tf.TensorArray(tf.float32, size=steps, element_shape=(None,))

        history = tf.zeros((batch, steps), tf.int32)  # the words so far (block_trigrams)
        positions = tf.range(steps)

        def body(t, words, state, ended, total, chosen, alphas, betas, history):
            log_probs, state, alpha, beta = self._step(encoded, words, state, t, weights,
                                                       history)
            words = self._choose(log_probs, seed, t)
            if self.block_trigrams:  # the only reader of the history
                history = tf.where(tf.equal(positions, t)[None, :], words[:, None], history)
            picked = tf.gather(log_probs, words, batch_dims=1)
            total += tf.where(ended, tf.zeros_like(picked), picked)
            ended = ended | tf.equal(words, self.end_id)
            return (t + 1, words, state, ended, total, chosen.write(t, words),
                    alphas.write(t, alpha), betas.write(t, beta), history)

        def running(t, words, state, ended, *rest):
            return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(ended)))

        t, _, _, _, total, chosen, alphas, betas, _ = tf.while_loop(
            running, body, (tf.constant(0), words, state, ended, total, chosen, alphas, betas,
                            history))
        pad = steps - t  # steps skipped once every caption had ended
        words = tf.pad(tf.transpose(chosen.stack()[:t]), [[0, 0], [0, pad]])
        return _clear_after_end({
            "words": words,
            "alpha": tf.pad(tf.transpose(alphas.stack()[:t], [1, 0, 2]),
                            [[0, 0], [0, pad], [0, 0]]),
            "beta": tf.pad(tf.transpose(betas.stack()[:t]), [[0, 0], [0, pad]]),
            "log_prob": total}, self.end_id)


class SamplingDecoder(GreedyDecoder):
    """Batched sampling: each word drawn from the softmax at ``temperature`` (> 0); ``seed``
    makes it reproducible (each call draws anew: the call count is part of the seed)."""

    def __init__(self, model, max_length=None, from_features=False, suppress_eos=False,
                 temperature=1.0, seed=0, **options):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature, self.seed = temperature, seed
        super().__init__(model, max_length, from_features, suppress_eos, **options)

    def _arguments(self, inputs, call):
        return inputs, _seed(self.seed, call)

    def _choose(self, log_probs, seed, step):
        scaled = log_probs / self.temperature
        sample_seed = tf.stack([seed[0], seed[1] * 1000 + tf.cast(step, tf.int64)])
        return tf.cast(tf.random.stateless_categorical(scaled, 1, sample_seed)[:, 0], tf.int32)


def _seed(seed, call):
    """The (2,) int64 seed of a decode: ``seed`` and the call count (an int or a tensor)."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(call, tf.int64)])

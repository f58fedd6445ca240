"""SentinelLSTM: shapes, config, golden numbers from NumPy, Keras LSTM layout, masks, dropout."""

import keras
import numpy as np
import pytest

from imcap.models.sentinel_lstm import SentinelLSTM


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_sentinel_lstm(x, kernel, recurrent, bias, s_kernel, s_recurrent, s_bias):
    """Lu et al. eqs. 9-10 with Keras' gate order i, f, c, o, step by step."""
    batch, time, _ = x.shape
    units = recurrent.shape[0]
    h, m = np.zeros((batch, units)), np.zeros((batch, units))
    hs, ss = [], []
    for t in range(time):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f = sigmoid(z[:, :units]), sigmoid(z[:, units:2 * units])
        c, o = np.tanh(z[:, 2 * units:3 * units]), sigmoid(z[:, 3 * units:])
        g = sigmoid(x[:, t] @ s_kernel + h @ s_recurrent + s_bias)
        m = f * m + i * c
        h = o * np.tanh(m)
        hs.append(h)
        ss.append(g * np.tanh(m))
    return np.stack(hs, 1), np.stack(ss, 1), h, m


def golden_weights(input_dim, units):
    def table(*shape, scale):
        return (np.cos(np.arange(np.prod(shape)) * 0.7).reshape(shape) * scale).astype("float32")
    return [table(input_dim, 4 * units, scale=0.3), table(units, 4 * units, scale=0.2),
            table(4 * units, scale=0.1), table(input_dim, units, scale=0.25),
            table(units, units, scale=0.15), table(units, scale=0.05)]


def test_basics_shapes_weights_and_config_round_trip(layer_check):
    layer = SentinelLSTM(6, dropout=0.1, recurrent_dropout=0.2, name="hs")
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype("float32")
    layer_check(layer, x, [(3, 5, 6), (3, 5, 6), (3, 6), (3, 6)], trainable_weights=6)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [
        (4, 24), (6, 24), (24,), (4, 6), (6, 6), (6,)]
    np.testing.assert_array_equal(np.asarray(layer.bias)[6:12], 1.0)  # unit_forget_bias
    with pytest.raises(ValueError, match="units must be a positive integer, got 0."):
        SentinelLSTM(0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5."):
        SentinelLSTM(4, dropout=1.5)


def test_golden_numbers_against_numpy():
    x = (np.arange(2 * 4 * 3).reshape(2, 4, 3) / 10.0).astype("float32")
    layer = SentinelLSTM(5)
    layer.build(x.shape)
    weights = golden_weights(3, 5)
    layer.set_weights(weights)
    h, s, (h_last, m_last) = layer(x)
    expected = numpy_sentinel_lstm(x.astype(np.float64), *weights)
    for got, want in zip((h, s, h_last, m_last), expected):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_hidden_states_equal_keras_lstm_with_the_same_weights():
    """The weight layout is keras.layers.LSTM's: same kernel, recurrent kernel and bias give the
    same h_t."""
    x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    ours = SentinelLSTM(7)
    ours.build(x.shape)
    reference = keras.layers.LSTM(7, return_sequences=True)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights()[:3])
    np.testing.assert_allclose(ours(x)[0], reference(x), atol=1e-5)


def test_constant_input_equals_concatenation():
    rng = np.random.default_rng(1)
    sequence = rng.normal(size=(2, 5, 3)).astype("float32")
    constant = rng.normal(size=(2, 4)).astype("float32")
    layer = SentinelLSTM(6)
    split_h, split_s, _ = layer([sequence, constant])
    joined = np.concatenate([sequence, np.repeat(constant[:, None], 5, axis=1)], axis=-1)
    joined_h, joined_s, _ = layer(joined)
    np.testing.assert_allclose(split_h, joined_h, atol=1e-5)
    np.testing.assert_allclose(split_s, joined_s, atol=1e-5)


def test_step_equals_the_full_sequence():
    rng = np.random.default_rng(2)
    sequence = rng.normal(size=(2, 4, 3)).astype("float32")
    constant = rng.normal(size=(2, 2)).astype("float32")
    layer = SentinelLSTM(5)
    h, s, _ = layer([sequence, constant])
    state = [np.zeros((2, 5), "float32")] * 2
    projected = layer.project_constant(constant)
    for t in range(4):
        h_t, s_t, state = layer.step(sequence[:, t], state, projected)
        np.testing.assert_allclose(h_t, h[:, t], atol=1e-5)
        np.testing.assert_allclose(s_t, s[:, t], atol=1e-5)


def test_mask_keeps_real_steps_and_carries_the_state():
    x = np.random.default_rng(3).normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    layer = SentinelLSTM(4)
    h_full, s_full, (h_last_full, _) = layer(x)
    h, s, (h_last, m_last) = layer(x, mask=mask)
    np.testing.assert_allclose(h[0, :3], h_full[0, :3], atol=1e-6)
    np.testing.assert_allclose(h[1], h_full[1], atol=1e-6)
    np.testing.assert_array_equal(h[0, 3:], 0.0)
    np.testing.assert_array_equal(s[0, 3:], 0.0)
    np.testing.assert_allclose(h_last[0], h_full[0, 2], atol=1e-6)  # state of the last real step
    np.testing.assert_allclose(h_last[1], h_last_full[1], atol=1e-6)
    # whatever sits in the padded steps does not matter
    noisy = x.copy()
    noisy[0, 3:] = 100.0
    np.testing.assert_allclose(layer(noisy, mask=mask)[0], h, atol=1e-6)


def test_dropout_only_in_training():
    x = np.random.default_rng(4).normal(size=(8, 5, 6)).astype("float32")
    layer = SentinelLSTM(6, dropout=0.5, recurrent_dropout=0.5)
    inference = [np.asarray(layer(x, training=False)[0]) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    trained = [np.asarray(layer(x, training=True)[0]) for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])
    assert not np.allclose(trained[0], inference[0])
    only_recurrent = SentinelLSTM(6, recurrent_dropout=0.5)
    only_recurrent.build(x.shape)
    only_recurrent.set_weights(layer.get_weights())
    first_steps = [np.asarray(only_recurrent(x, training=True)[0])[:, 0] for _ in range(2)]
    np.testing.assert_allclose(first_steps[0], first_steps[1])  # h_0 = 0: nothing to drop yet
    np.testing.assert_allclose(first_steps[0], inference[0][:, 0], atol=1e-6)


def test_unknown_length_runs_the_while_loop_with_the_same_numbers():
    """Inside a traced function with an unknown number of steps the layer scans; with a known
    number it unrolls. Both give the same outputs and gradients."""
    import tensorflow as tf

    x = np.random.default_rng(5).normal(size=(3, 6, 4)).astype("float32")
    layer = SentinelLSTM(5)
    layer(x)

    def outputs_and_gradient(inputs):
        with tf.GradientTape() as tape:
            h, s, _ = layer(inputs)
            loss = tf.reduce_sum(h * h) + tf.reduce_sum(s)
        return h, s, tape.gradient(loss, layer.recurrent_kernel)

    scanned = tf.function(outputs_and_gradient,
                          input_signature=[tf.TensorSpec((None, None, 4), tf.float32)])(x)
    unrolled = tf.function(outputs_and_gradient)(tf.constant(x))
    for a, b in zip(scanned, unrolled):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_masked_sequence_of_unknown_length():
    import tensorflow as tf

    x = np.random.default_rng(6).normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=bool)
    layer = SentinelLSTM(4)
    unrolled = layer(x, mask=mask)
    scanned = tf.function(lambda a, b: layer(a, mask=b), input_signature=[
        tf.TensorSpec((None, None, 3), tf.float32), tf.TensorSpec((None, None), tf.bool)])(x, mask)
    for a, b in zip(tf.nest.flatten(unrolled), tf.nest.flatten(scanned)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_recurrent_dropout_draws_one_mask_per_gate():
    """imcap_keras' B_U: gate j sees h_{t-1} under its own mask. The layer's output with masks
    drawn by the layer equals a NumPy recurrence using those masks gate by gate."""
    x = np.random.default_rng(7).normal(size=(3, 4, 5)).astype("float32")
    layer = SentinelLSTM(6, recurrent_dropout=0.5)
    layer.build(x.shape)
    drawn = []
    real = layer._dropout_masks

    def keep_masks(*args):
        input_mask, recurrent_masks = real(*args)
        drawn.append(np.asarray(recurrent_masks))
        return input_mask, recurrent_masks
    layer._dropout_masks = keep_masks
    h, s, _ = layer(x, training=True)
    masks = drawn[0]  # (batch, 5 gates, units), each 0 or 2 (kept units scaled by 1 / 0.5)
    assert masks.shape == (3, 5, 6) and set(np.unique(masks)) <= {0.0, 2.0}
    assert not all(np.array_equal(masks[:, 0], masks[:, j]) for j in range(1, 5))
    kernel, recurrent, bias, s_kernel, s_recurrent, s_bias = layer.get_weights()
    w = np.concatenate([kernel, s_kernel], axis=1)
    u = np.concatenate([recurrent, s_recurrent], axis=1)
    b = np.concatenate([bias, s_bias])
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h_t, m_t = np.zeros((3, 6)), np.zeros((3, 6))
    for t in range(4):
        z = x[:, t] @ w + b + np.concatenate(
            [(h_t * masks[:, j]) @ u[:, 6 * j:6 * (j + 1)] for j in range(5)], axis=1)
        i, f, c, o, g = np.split(z, 5, axis=1)
        m_t = sigmoid(f) * m_t + sigmoid(i) * np.tanh(c)
        h_t = sigmoid(o) * np.tanh(m_t)
        np.testing.assert_allclose(h[:, t], h_t, atol=1e-5)
        np.testing.assert_allclose(s[:, t], sigmoid(g) * np.tanh(m_t), atol=1e-5)


@pytest.mark.parametrize("use_sentinel", [True, False])
def test_recurrent_dropout_in_the_while_loop_equals_the_unrolled_steps(use_sentinel):
    """Training with per-gate masks and padding: the loop over an unknown number of steps (its
    gate-major layout carries the padding mask as one more gate) gives the unrolled numbers
    when both draw the same masks."""
    import tensorflow as tf

    x = np.random.default_rng(9).normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)
    layer = SentinelLSTM(6, recurrent_dropout=0.5, use_sentinel=use_sentinel)
    layer.build(x.shape)
    start = np.asarray(layer.seed_generator.state)
    unrolled = layer(x, mask=mask, training=True)
    layer.seed_generator.state.assign(start)
    looped = tf.function(lambda a, b: layer(a, mask=b, training=True), input_signature=[
        tf.TensorSpec((None, None, 4), tf.float32), tf.TensorSpec((None, None), tf.bool)])(x, mask)
    assert not np.allclose(unrolled[0], layer(x, mask=mask)[0], atol=1e-3)  # masks applied
    for a, b in zip(tf.nest.flatten(unrolled), tf.nest.flatten(looped)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.all(np.asarray(unrolled[0])[0, 3:] == 0)  # padded steps: zero outputs


def test_without_the_sentinel_it_is_keras_lstm():
    """use_sentinel=False: no sentinel weights, no s_t, and keras.layers.LSTM's numbers
    (imcap_keras' LSTM_sent(sentinel=False)); its step equals the full sequence."""
    x = np.random.default_rng(8).normal(size=(2, 5, 3)).astype("float32")
    layer = SentinelLSTM(4, use_sentinel=False)
    h, (h_last, m_last) = layer(x)
    assert [w.path.split("/")[-1] for w in layer.weights] == ["kernel", "recurrent_kernel",
                                                               "bias"]
    reference = keras.layers.LSTM(4, return_sequences=True)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(h, reference(x), atol=1e-5)
    state = [np.zeros((2, 4), "float32")] * 2
    for t in range(5):
        h_t, s_t, state = layer.step(x[:, t], state)
        assert s_t is None
        np.testing.assert_allclose(h_t, h[:, t], atol=1e-5)
    restored = SentinelLSTM.from_config(layer.get_config())
    assert restored.use_sentinel is False

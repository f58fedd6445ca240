"""AdaptiveAttention: shapes, config, golden numbers from NumPy, sentinel dropout."""

import keras
import numpy as np
import pytest

from imcap.models.adaptive_attention import AdaptiveAttention


def table(*shape, scale, phase=0.0):
    return (np.sin(np.arange(np.prod(shape)) * 0.9 + phase).reshape(shape) * scale).astype(
        "float32")


def numpy_attention(h, s, regions, keys, w):
    """Lu et al. eqs. 11-12 as imcap_keras' model.py wires them, written out in NumPy."""
    relu = lambda x: np.maximum(x, 0.0)  # noqa: E731
    h_z = np.tanh(h @ w["zh_linear"][0] + w["zh_linear"][1])
    h_e = h_z @ w["zh_embed"][0] + w["zh_embed"][1]  # linear, as at imcap_keras HEAD
    s_z = relu(s @ w["zs_linear"][0] + w["zs_linear"][1])
    s_e = s_z @ w["zs_embed"][0] + w["zs_embed"][1]  # linear, as at imcap_keras HEAD
    batch, time, _ = h.shape
    out = np.zeros(h_z.shape)
    weights = np.zeros((batch, time, keys.shape[1] + 1))
    for b in range(batch):
        for t in range(time):
            slots = np.concatenate([keys[b], s_e[b, t][None]], axis=0)  # (K + 1, emb)
            logits = np.tanh(slots + h_e[b, t]) @ w["att"][0][:, 0] + w["att"][1][0]
            alpha = np.exp(logits - logits.max())
            alpha /= alpha.sum()
            values = np.concatenate([regions[b], s_z[b, t][None]], axis=0)
            out[b, t] = h_z[b, t] + alpha @ values
            weights[b, t] = alpha
    return out, weights


def build(layer, batch=2, time=3, units=5, regions=4):
    h = table(batch, time, units, scale=1.0)
    s = table(batch, time, units, scale=0.8, phase=1.0)
    v = table(batch, regions, layer.z_dim, scale=0.7, phase=2.0)
    k = np.abs(table(batch, regions, layer.emb_dim, scale=0.6, phase=3.0))
    inputs = [h, v, k, s] if layer.use_sentinel else [h, v, k]
    layer(inputs)
    return inputs


def test_basics_shapes_weights_and_config_round_trip(layer_check):
    layer = AdaptiveAttention(6, 7, use_sentinel=True, dropout=0.1, sentinel_dropout=0.2,
                              name="attention")
    inputs = build(layer)
    # 5 dense layers, kernel and bias each
    out, weights = layer_check(layer, inputs, [(2, 3, 6), (2, 3, 5)], trainable_weights=10)
    assert keras.backend.standardize_dtype(weights.dtype) == "float32"
    plain = AdaptiveAttention(6, 7, use_sentinel=False)
    out, weights = plain(build(plain))
    assert weights.shape == (2, 3, 4) and len(plain.trainable_weights) == 6
    with pytest.raises(ValueError, match="sentinel_dropout needs use_sentinel=True"):
        AdaptiveAttention(6, 7, use_sentinel=False, sentinel_dropout=0.5)


def test_golden_numbers_against_numpy():
    layer = AdaptiveAttention(6, 7, use_sentinel=True)
    inputs = build(layer)
    w = {}
    for k, sub in enumerate((layer.hidden_linear, layer.hidden_embed, layer.sentinel_linear,
                             layer.sentinel_embed, layer.score)):
        kernel = table(*sub.kernel.shape, scale=0.5, phase=k)
        bias = table(*sub.bias.shape, scale=0.1, phase=k + 0.5)
        sub.set_weights([kernel, bias])
        w[sub.name] = (kernel.astype(np.float64), bias.astype(np.float64))
    out, weights = layer(inputs)
    h, v, k, s = (x.astype(np.float64) for x in inputs)
    want_out, want_weights = numpy_attention(h, s, v, k, w)
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    np.testing.assert_allclose(weights, want_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)


def test_sentinel_dropout_switches_beta_off_for_whole_captions_in_training_only():
    layer = AdaptiveAttention(4, 4, use_sentinel=True, sentinel_dropout=0.5)
    inputs = build(layer, batch=64, time=3)
    _, weights = layer(inputs, training=True)
    beta = np.asarray(weights)[..., -1]
    off = np.all(beta == 0.0, axis=1)
    assert 16 <= off.sum() <= 48  # about half the captions, every step of each
    assert np.all(beta[~off] > 0.0)
    _, inference = layer(inputs, training=False)
    assert np.all(np.asarray(inference)[..., -1] > 0.0)
    regions_only = np.asarray(weights)[off, :, :-1].sum(-1)
    np.testing.assert_allclose(regions_only, 1.0, atol=1e-6)


def test_dropout_only_in_training():
    layer = AdaptiveAttention(8, 8, use_sentinel=True, dropout=0.5)
    inputs = build(layer, batch=4)
    a, b = (np.asarray(layer(inputs, training=False)[0]) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c, d = (np.asarray(layer(inputs, training=True)[0]) for _ in range(2))
    assert not np.allclose(c, d)

"""Variable numbers of regions per image (``variable_regions``): features padded to K rows with
a count per image give, in training, decoding and after a save, what each image gives alone
with K = its count; padded regions get exactly zero attention."""

import keras
import numpy as np
import pytest

from imcap.decoding import BeamSearchDecoder, GreedyDecoder, SamplingDecoder
from imcap.models import saving
from imcap.models.adaptive_attention import AdaptiveAttention
from imcap.models.captioner import Captioner, region_mask
from imcap.models.config import CaptionerConfig
from tests.conftest import sharpen_logits

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]
END = 7
K, D = 6, 5
COUNTS = np.array([2, 6, 4, 1], "int32")  # real regions of each image: padded but one


def variable_captioner(seed=0, **changes):
    keras.utils.set_random_seed(seed)
    values = dict(vocabulary=VOCAB, input_images=False, num_regions=K, feature_dim=D,
                  emb_dim=8, z_dim=9, lstm_dim=8, dr_ratio=0.0, use_sentinel=True,
                  variable_regions=True, standardize="channel")
    model = Captioner(CaptionerConfig(**dict(values, **changes)))
    model.standardize.set_statistics(np.linspace(0.5, 2.0, D))
    return sharpen_logits(model, seed, END)


def alone(model, count):
    """The same weights as a fixed-K captioner with K = ``count`` (nothing in it depends on K)."""
    single = Captioner(model.config.replace(num_regions=int(count), variable_regions=False))
    single.set_weights(model.get_weights())
    return single


def padded_batch(seed=0, captions=2, time=5):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(len(COUNTS), K, D)).astype("float32")
    features[np.arange(K)[None] >= COUNTS[:, None]] = 0.0
    words = rng.integers(1, len(VOCAB) + 1, size=(len(COUNTS), captions, time)).astype("int32")
    return features, words


def test_config_refusals_and_old_configs():
    with pytest.raises(ValueError, match="variable_regions=True needs .* input_images=True"):
        CaptionerConfig(vocabulary=VOCAB, variable_regions=True)
    base = dict(vocabulary=VOCAB, input_images=False, num_regions=K, feature_dim=D,
                variable_regions=True)
    with pytest.raises(ValueError, match="variable_regions=True .* position_embedding=True"):
        CaptionerConfig(**base, position_embedding=True)
    with pytest.raises(ValueError, match="variable_regions=True .* standardize='position'"):
        CaptionerConfig(**base, standardize="position")
    old = CaptionerConfig(**dict(base, variable_regions=False)).to_dict()
    del old["variable_regions"]  # saved before the field existed
    assert CaptionerConfig.from_dict(old).variable_regions is False
    assert CaptionerConfig.from_dict(CaptionerConfig(**base).to_dict()).variable_regions


def test_attention_gives_padded_regions_exactly_zero_weight(tmp_path):
    rng = np.random.default_rng(0)
    h, s = (rng.normal(size=(4, 3, 5)).astype("float32") for _ in range(2))
    regions, keys = rng.normal(size=(4, K, 6)).astype("float32"), rng.normal(size=(4, K, 7))
    keys = keys.astype("float32")
    mask = np.asarray(region_mask(COUNTS, K))
    padded = np.repeat(~mask[:, None], 3, axis=1)  # (4, time, K)
    layer = AdaptiveAttention(6, 7, use_sentinel=True, dropout=0.5, sentinel_dropout=0.5)
    for training in (True, False):  # dropout and sentinel dropout on: still exactly zero
        out, weights = (np.asarray(t) for t in layer([h, regions, keys, s], region_mask=mask,
                                                      training=training))
        assert out.shape == (4, 3, 6) and weights.shape == (4, 3, K + 1)
        assert (weights[:, :, :K][padded] == 0.0).all() and (weights[:, :, :K][~padded] > 0).all()
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    for i, count in enumerate(COUNTS):  # the image alone, its real regions only
        want_out, want = layer([h[i:i + 1], regions[i:i + 1, :count], keys[i:i + 1, :count],
                                s[i:i + 1]])
        np.testing.assert_allclose(out[i:i + 1], want_out, atol=1e-6)
        np.testing.assert_allclose(weights[i:i + 1][..., np.r_[:count, K]], want, atol=1e-6)
    # the .keras round trip with safe_mode (layer_check takes no call keywords)
    symbolic = [keras.Input(x.shape[1:]) for x in (h, regions, keys, s)]
    mask_input = keras.Input((K,), dtype="bool")
    model = keras.Model(symbolic + [mask_input], layer(symbolic, region_mask=mask_input))
    model.save(tmp_path / "attention.keras")
    loaded = keras.saving.load_model(tmp_path / "attention.keras", safe_mode=True)
    for a, b in zip(loaded([h, regions, keys, s, mask]), (out, weights)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert AdaptiveAttention.from_config(layer.get_config()).get_config() == layer.get_config()


# the image of one region alone, without the sentinel: Keras warns of a softmax over 1 slot
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
@pytest.mark.parametrize("variant", [
    {}, {"use_sentinel": False, "dropout_layers": True}, {"attention": False}])
def test_a_padded_batch_gives_each_images_own_logits(variant):
    """Teacher forced, at inference and through the training path (dropout rates 0)."""
    model = variable_captioner(**variant)
    features, words = padded_batch()
    for training in (False, True):
        logits = np.asarray(model({"features": features, "num_regions": COUNTS, "words": words},
                                  training=training))
        for i, count in enumerate(COUNTS):
            single = alone(model, count)
            want = single({"features": features[i:i + 1, :count], "words": words[i:i + 1]},
                          training=training)
            np.testing.assert_allclose(logits[i:i + 1], want, atol=1e-6)


def test_padded_regions_get_no_attention_in_training_with_dropout():
    model = variable_captioner(dr_ratio=0.5, dropout_layers=True, sent_dropout=0.5)
    probe = keras.Model(model.inputs, model.get_layer("attention").output[1])
    features, words = padded_batch(captions=3)
    weights = np.asarray(probe({"features": features, "num_regions": COUNTS, "words": words},
                               training=True))  # (B * N, T, K + 1), caption-major per image
    padded = np.repeat(np.arange(K)[None] >= COUNTS[:, None], 3, axis=0)  # (B * N, K)
    assert (weights[:, :, :K][np.repeat(padded[:, None], 5, 1)] == 0.0).all()
    assert (weights[:, :, :K] > 0).sum() == 5 * (~padded).sum()  # the real ones do get some
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


DECODERS = {"greedy": lambda m: GreedyDecoder(m, 8),
            "sampling": lambda m: SamplingDecoder(m, 8, temperature=1.0, seed=3),
            "beam": lambda m: BeamSearchDecoder(m, 3, 8)}


def check_decodes_as_alone(model, features, out, make_decoder):
    """``out`` (the padded batch's) equals each image decoded alone: as row i of a batch of
    copies, so that sampling draws the same numbers for it."""
    assert len(set((row != 0).sum() for row in out["words"])) > 1  # several lengths
    for i, count in enumerate(COUNTS):
        copies = np.repeat(features[i:i + 1, :count], len(COUNTS), axis=0)
        want = make_decoder(alone(model, count)).decode(copies)
        np.testing.assert_array_equal(out["words"][i], want["words"][i])
        np.testing.assert_allclose(out["alpha"][i, :, :count], want["alpha"][i], atol=1e-6)
        assert (out["alpha"][i, :, count:] == 0.0).all()
        np.testing.assert_allclose(out["beta"][i], want["beta"][i], atol=1e-6)
        np.testing.assert_allclose(out["log_prob"][i], want["log_prob"][i], atol=1e-5)


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoding_a_padded_batch_equals_decoding_each_image_alone(name):
    model = variable_captioner(seed=5)  # a seed giving captions of several lengths
    features, _ = padded_batch(seed=5)
    out = DECODERS[name](model).decode(features, num_regions=COUNTS)
    check_decodes_as_alone(model, features, out, DECODERS[name])
    with pytest.raises(ValueError, match="needs num_regions"):
        DECODERS[name](model).decode(features)


def test_num_regions_without_variable_regions_is_refused():
    model = alone(variable_captioner(), K)
    with pytest.raises(ValueError, match="num_regions needs a captioner with variable_regions"):
        GreedyDecoder(model, 8).decode(padded_batch()[0], num_regions=COUNTS)


def test_mixed_float16_keeps_padded_regions_at_exactly_zero_attention():
    model = variable_captioner(dtype_policy="mixed_float16")
    features, words = padded_batch()
    encoded = model.encode(features, num_regions=COUNTS)
    _, _, alpha, beta = model.step(encoded, words[:, 0, 0], model.initial_state(len(COUNTS)))
    alpha = np.asarray(alpha)
    assert (alpha[np.arange(K)[None] >= COUNTS[:, None]] == 0.0).all()
    np.testing.assert_allclose(alpha.sum(-1) + np.asarray(beta), 1.0, atol=1e-3)
    logits = model({"features": features, "num_regions": COUNTS, "words": words})
    for i, count in enumerate(COUNTS):  # float16 sums: the same up to float16 rounding
        want = alone(model, count)({"features": features[i:i + 1, :count],
                                    "words": words[i:i + 1]})
        np.testing.assert_allclose(logits[i:i + 1], want, atol=2e-2)


def test_a_saved_variable_regions_model_loads_with_safe_mode(tmp_path):
    model = variable_captioner(seed=2)
    features, words = padded_batch(seed=2)
    x = {"features": features, "num_regions": COUNTS, "words": words}
    path = str(tmp_path / "variable.keras")
    saving.save_model(model, path)
    loaded = saving.load_model(path, compile=False)  # safe_mode=True
    assert loaded.config.variable_regions
    assert sorted(i.name for i in loaded.inputs) == ["features", "num_regions", "words"]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    for name in ("greedy", "beam"):
        out = DECODERS[name](loaded).decode(features, num_regions=COUNTS)
        want = DECODERS[name](model).decode(features, num_regions=COUNTS)
        np.testing.assert_array_equal(out["words"], want["words"])
        np.testing.assert_allclose(out["alpha"], want["alpha"], atol=1e-6)

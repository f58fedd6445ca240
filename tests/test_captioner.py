"""Captioner: step decoding equals the full-sequence call, save/load, dropout, mixed precision."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.data.loader import CaptionData

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]


def tiny_config(**changes):
    values = dict(vocabulary=VOCAB, input_images=False, num_regions=6, feature_dim=10,
                  emb_dim=8, z_dim=9, lstm_dim=7, dr_ratio=0.0, use_sentinel=True)
    values.update(changes)
    return CaptionerConfig(**values)


def inputs(batch=2, captions=3, time=6, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, 6, 10)).astype("float32")
    words = rng.integers(1, len(VOCAB) + 1, size=(batch, captions, time)).astype("int32")
    return features, words


VARIANTS = {
    "sgate": {},
    "spatial": {"use_sentinel": False},
    "lstm_baseline": {"use_sentinel": False, "attention": False},
    "standardised_positions": {"standardize": "position", "position_embedding": True},
}
STATISTICS = (np.linspace(0.5, 2.0, 10), np.ones((6, 10)))  # scale (D,), center (K, D)


def build(variant):
    model = Captioner(tiny_config(**VARIANTS[variant]))
    if model.standardize is not None:
        model.standardize.set_statistics(*STATISTICS)
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_by_step_decoding_equals_the_full_sequence(variant):
    model = build(variant)
    features, words = inputs()
    logits = np.asarray(model({"features": features, "words": words}))
    assert logits.shape == (2, 3, 6, len(VOCAB) + 1) and logits.dtype == np.float32
    full = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for caption in range(3):
        encoded = model.encode(features)
        state = model.initial_state(2)
        for t in range(6):
            log_probs, state, alpha, beta = model.step(encoded, words[:, caption, t], state)
            np.testing.assert_allclose(log_probs, full[:, caption, t], atol=1e-5)
            if variant == "lstm_baseline":
                assert alpha is None and beta is None
            elif variant == "spatial":
                assert beta is None
                np.testing.assert_allclose(np.asarray(alpha).sum(-1), 1.0, atol=1e-5)
            else:
                np.testing.assert_allclose(np.asarray(alpha).sum(-1) + beta, 1.0, atol=1e-5)


def test_captions_of_one_image_share_its_image_side_work():
    model = Captioner(tiny_config())
    features, words = inputs(batch=1, captions=3)
    grouped = np.asarray(model({"features": features, "words": words}))
    separate = np.asarray(model({"features": np.repeat(features, 3, axis=0),
                                 "words": words.reshape(3, 1, 6)}))
    np.testing.assert_allclose(grouped[0], separate[:, 0], atol=1e-5)


def test_padding_does_not_change_real_steps():
    model = Captioner(tiny_config())
    features, words = inputs(captions=1, time=5)
    padded = np.concatenate([words, np.zeros((2, 1, 4), "int32")], axis=-1)
    short = np.asarray(model({"features": features, "words": words}))
    long = np.asarray(model({"features": features, "words": padded}))
    np.testing.assert_allclose(long[:, :, :5], short, atol=1e-6)


def test_saved_model_loads_in_a_fresh_process_with_safe_mode(tmp_path):
    model = Captioner(tiny_config(position_embedding=True, standardize="channel"))
    model.standardize.set_statistics(np.linspace(1, 2, 10))
    features, words = inputs()
    expected = np.asarray(model({"features": features, "words": words}))
    path = tmp_path / "captioner.keras"
    model.save(path)
    np.save(tmp_path / "features.npy", features)
    np.save(tmp_path / "words.npy", words)
    script = (
        "import json, sys, keras, numpy as np\n"
        "import imcap.models.captioner\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        f"f = np.load({str(tmp_path / 'features.npy')!r}); "
        f"w = np.load({str(tmp_path / 'words.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, np.asarray(m({{'features': f, 'words': w}})))\n"
        "print(json.dumps(m.config.to_dict()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == model.config.to_dict()


@pytest.mark.parametrize("center", [None, np.ones((6, 10))])
def test_a_checkpoint_with_its_statistics_in_the_config_loads_with_them(tmp_path, center):
    """Checkpoints saved before the statistics were weights kept them in the config
    (feature_scale, feature_center, and the layer's own scale / center): they load with those
    statistics as weights, compute what they computed, and save in the new form."""
    scale = np.linspace(1, 2, 10)
    model = Captioner(tiny_config(standardize="position" if center is not None else "channel"))
    model.standardize.set_statistics(scale, center)
    features, words = inputs()
    expected = np.asarray(model({"features": features, "words": words}))
    path = str(tmp_path / "new.keras")
    model.save(path)
    old = str(tmp_path / "old.keras")
    rewrite_config(path, old, scale, center, tmp_path)
    restored = keras.saving.load_model(old, safe_mode=True)
    assert restored.config.standardize == model.config.standardize
    np.testing.assert_allclose(restored({"features": features, "words": words}), expected,
                               atol=1e-6)
    np.testing.assert_allclose(restored.standardize.scale, scale, rtol=1e-6)
    again = str(tmp_path / "again.keras")
    restored.save(again)
    np.testing.assert_allclose(keras.saving.load_model(again, safe_mode=True)(
        {"features": features, "words": words}),
                               expected, atol=1e-6)


def rewrite_config(path, out, scale, center, workdir):
    """``path``'s .keras as an imcap before issue 15 saved it: the statistics in the captioner's
    config and in the layer's, and no weights for the layer."""
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as source:
        config = json.loads(source.read("config.json"))
        weights = source.read("model.weights.h5")
        metadata = source.read("metadata.json")
    inner = config["config"]["config"]
    inner.pop("standardize")
    inner["feature_scale"] = scale.tolist()
    inner["feature_center"] = None if center is None else center.tolist()
    weights_path = str(workdir / "w.h5")
    with open(weights_path, "wb") as f:
        f.write(weights)
    with h5py.File(weights_path, "a") as f:
        found = []
        f.visit(lambda name: found.append(name) if name.endswith("standardization") else None)
        assert found, "the layer's weights were not where the test expects them"
        for name in found:
            del f[name]
    with zipfile.ZipFile(out, "w") as target:
        target.writestr("config.json", json.dumps(config))
        target.writestr("metadata.json", metadata)
        target.write(weights_path, "model.weights.h5")


def test_dropout_zeros_what_imcap_keras_final_model_drops(monkeypatch):
    """--dr drops, in this order, what imcap_keras HEAD's model.py drops (lines 66-173): Vg_,
    Vi, the word embedding, lstm_in, zh_linear, the key sums, zs_linear, the sentinel's key sum
    and the output MLP's tanh (mlp_in_tanh_dp); the LSTM draws one recurrent mask per gate (5)
    and none on its input. Each site is told by its shape (B 2, N 3 captions, T 6, K 6, emb 8,
    z 9, units 7), and each one's output really has zeros in training, none at inference."""
    sites, masks = [], []
    real_call, real_dropout = keras.layers.Dropout.call, keras.random.dropout

    def spy_call(self, inputs, training=False):
        outputs = real_call(self, inputs, training=training)
        live = np.asarray(inputs) != 0  # of the non-zero activations, the share zeroed
        sites.append((tuple(inputs.shape), bool(training),
                      float(np.mean(np.asarray(outputs)[live] == 0))))
        return outputs

    def spy_dropout(inputs, rate, *args, **kwargs):
        masks.append((tuple(inputs.shape), rate))
        return real_dropout(inputs, rate, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Dropout, "call", spy_call)
    monkeypatch.setattr(keras.random, "dropout", spy_dropout)
    keras.utils.set_random_seed(0)
    model = Captioner(tiny_config(dr_ratio=0.5, dropout_layers=True, sent_dropout=0.4))
    features, words = inputs()
    sites.clear()
    model({"features": features, "words": words}, training=False)
    assert masks == [] and all(not training and zeroed == 0 for _, training, zeroed in sites)
    sites.clear()
    a = np.asarray(model({"features": features, "words": words}, training=True))
    expected = [(2, 8),           # Vg_
                (2, 6, 9),        # Vi
                (6, 6, 8),        # the word embedding (after its relu)
                (6, 6, 16),       # lstm_in = [w_t ; v_g]
                (6, 6, 9),        # zh_linear
                (6, 6, 6, 8),     # Vi_emb + zh_embed, before the tanh
                (6, 6, 9),        # zs_linear
                (6, 6, 1, 8),     # zs_embed + zh_embed, before the tanh
                (6, 6, 8)]        # mlp_in_tanh_dp: after the MLP's tanh
    assert [shape for shape, _, _ in sites] == expected
    for shape, training, zeroed in sites:
        assert training and 0.15 < zeroed < 0.85, (shape, zeroed)
    assert masks == [((6, 5, 7), 0.5)]  # one recurrent mask per gate, i f c o g
    b = np.asarray(model({"features": features, "words": words}, training=True))
    assert not np.allclose(a, b)


def test_without_the_sentinel_the_lstm_has_no_sentinel_gate():
    """imcap_keras' LSTM_sent(sentinel=False): four gates, no sentinel weights."""
    for sgate, gates in ((True, 5), (False, 4)):
        model = Captioner(tiny_config(use_sentinel=sgate))
        names = sorted(w.path.split("/")[-1] for w in model.get_layer("hs").weights)
        sentinel = ["sentinel_bias", "sentinel_kernel", "sentinel_recurrent_kernel"]
        assert names == sorted(["bias", "kernel", "recurrent_kernel"] + sentinel * (gates == 5))
        assert model.get_layer("hs").recurrent_kernel_all().shape == (7, gates * 7)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_softmax_and_logits_in_float32(policy):
    reference = Captioner(tiny_config())
    model = Captioner(tiny_config(dtype_policy=policy))
    model.set_weights(reference.get_weights())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone
    features, words = inputs()
    logits = model({"features": features, "words": words})
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(logits, reference({"features": features, "words": words}),
                               atol=0.1)
    log_probs, _, alpha, beta = model.step(model.encode(features), words[:, 0, 0],
                                           model.initial_state(2))
    for tensor in (log_probs, alpha, beta):
        assert keras.backend.standardize_dtype(tensor.dtype) == "float32"
    assert model.get_layer("hs").compute_dtype == policy.split("_")[1]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(words[..., 1:],
                                                                         logits[..., :-1, :])
    assert np.isfinite(float(loss))


def test_vocabulary_comes_from_the_preprocessed_json(shapes_prepro):
    data = CaptionData(*shapes_prepro, "train")
    config = CaptionerConfig(vocabulary=data.vocabulary, input_images=False, num_regions=4,
                             feature_dim=8)
    assert config.vocabulary == data.vocabulary
    assert config.vocabulary.size == len(data.vocabulary) + 1
    assert config.vocabulary.word(config.vocabulary.start_id) == "<start>"
    assert data.vocabulary.word(config.vocabulary.end_id) == "<eos>"
    assert CaptionerConfig.from_dict(config.to_dict()).vocabulary == data.vocabulary
    assert config.to_dict()["vocabulary"] == list(data.vocabulary.words)  # JSON in checkpoints


def test_config_errors():
    with pytest.raises(ValueError, match="vocabulary must contain '<start>'"):
        CaptionerConfig(vocabulary=["a", "<eos>"], input_images=False, num_regions=1,
                        feature_dim=1)
    with pytest.raises(ValueError, match="sent_dropout needs the sentinel"):
        tiny_config(use_sentinel=False, sent_dropout=0.5)
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        tiny_config(dtype_policy="float64")
    with pytest.raises(ValueError, match="needs num_regions and feature_dim"):
        tiny_config(num_regions=None)
    with pytest.raises(ValueError, match="unknown captioner config fields: colour"):
        CaptionerConfig.from_dict(dict(tiny_config().to_dict(), colour="red"))


def test_a_checkpoint_from_before_imcap_keras_final_model_is_refused_in_one_line(tmp_path):
    """A .keras saved before model version 2 (its config has no model_version) would compute
    another function with these layers: loading it is one line naming what changed."""
    import zipfile

    from imcap.models import saving
    from imcap.utils.fileio import DataError

    path = tmp_path / "new.keras"
    saving.save_model(Captioner(tiny_config()), str(path))
    assert saving.load_model(str(path), compile=False).config.model_version == 2
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                del config["config"]["config"]["model_version"]
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(DataError) as error:
        saving.load_model(str(old), compile=False)
    message = str(error.value)
    assert "\n" not in message and str(old) in message
    assert "model version 1" in message and "zh_embed (tanh)" in message, message


def test_a_config_saved_with_sgate_reads_as_use_sentinel():
    """Checkpoints before the rename stored imcap_keras' flag name; they compute the same."""
    values = tiny_config().to_dict()
    values["sgate"] = values.pop("use_sentinel")
    assert CaptionerConfig.from_dict(values) == tiny_config()
    assert "sgate" not in tiny_config().to_dict()

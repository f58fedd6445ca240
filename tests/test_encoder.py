"""Encoder: grids of each CNN, weights files, freezing and fine-tuning, feature statistics."""

import socket
import urllib.error

import keras
import numpy as np
import pytest

from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.models import encoder as encoder_module
from imcap.models.encoder import build_encoder, set_trainable
from imcap.models.feature_standardization import FeatureStandardization, feature_statistics


@pytest.mark.parametrize("cnn,size,layer,grid", [
    ("resnet", 64, None, (4, 2048)), ("resnet", 64, "conv4_block6_out", (16, 1024)),
    ("vgg16", 64, None, (4, 512)), ("vgg19", 32, "block4_pool", (4, 512))])
def test_region_grids(cnn, size, layer, grid):
    encoder = build_encoder(cnn, None, size, layer)
    assert encoder.output.shape[1:] == grid
    out = encoder(np.zeros((1, size, size, 3), "float32"))
    assert out.shape == (1,) + grid


def test_resnet_at_imcap_keras_size_gives_8x8x2048():
    assert build_encoder("resnet", "none", 256).output.shape[1:] == (64, 2048)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="cnn_layer 'conv9' is not a layer of resnet; block "
                                         "outputs are .*conv4_block6_out"):
        build_encoder("resnet", None, 64, "conv9")
    with pytest.raises(ValueError, match="image_size 16 is too small for vgg16: keras"):
        build_encoder("vgg16", None, 16)
    with pytest.raises(ValueError, match="image_size 8 is too small for resnet"):
        build_encoder("resnet", None, 8)
    with pytest.raises(ValueError, match="got 'nope.h5' \\(no such file\\)"):
        build_encoder("resnet", "nope.h5", 64)
    with pytest.raises(ValueError, match="cnn must be one of resnet, resnet101, .*, got 'vgg'"):
        build_encoder("vgg", None, 64)


def test_local_weights_file(tmp_path):
    """A weights file of the whole include_top=False network, as Keras' own downloads are."""
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    loaded = build_encoder("vgg16", str(path), 32)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = np.asarray(source(images)).reshape(2, -1, 512)
    np.testing.assert_allclose(loaded(images), expected, atol=1e-5)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, and an empty Keras cache in tmp_path/keras: Keras' own download code runs
    (get_file) and fails as it does offline; the real ~/.keras is not touched."""
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def no_network(url, target, progress=None):
        with open(target, "wb") as f:
            f.write(b"partial")  # a download cut short: get_file must remove it
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    (tmp_path / "keras").mkdir()  # get_file falls back to /tmp/.keras where there is none
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path / "keras" / "models"


def test_imagenet_weights_offline_is_one_line_naming_the_url_and_remedies(offline, capsys):
    from imcap.utils.cli import one_line_errors

    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(ValueError) as error:
        build_encoder("resnet", "imagenet", 32)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("cannot download the ImageNet weights of resnet from https://"
                              f"storage.googleapis.com/tensorflow/keras-applications/resnet/{name}"
                              " ([Errno -2] Name or service not known); ")
    assert f"-cnn_weights FILE, or put it at {offline / name} (where Keras" in message
    assert message.endswith("or use -cnn_weights none (random initialisation)")
    assert list(offline.iterdir()) == []  # no partial download left in the cache
    with pytest.raises(SystemExit) as stop, one_line_errors("train"):
        build_encoder("vgg16", "imagenet", 32)
    assert stop.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "train: error: cannot download the ImageNet weights of vgg16 from https://")
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in lines[0]


def test_only_the_download_failure_is_rewritten():
    assert encoder_module.download_error("resnet", RuntimeError("URL fetch failure on x: y")) \
        is None
    assert encoder_module.download_error("resnet", Exception("something else")) is None
    http = encoder_module.download_error("vgg19", Exception(
        "URL fetch failure on https://host/w/vgg19_notop.h5: 403 -- Forbidden"))
    assert str(http).startswith("cannot download the ImageNet weights of vgg19 from "
                                "https://host/w/vgg19_notop.h5 (403 -- Forbidden); ")
    assert "vgg19_notop.h5 (where Keras looks" in str(http)


def test_frozen_encoder_keeps_batch_norm_in_inference_mode():
    encoder = build_encoder("resnet", None, 32, "conv2_block1_out")
    set_trainable(encoder)
    assert encoder.trainable_weights == []
    images = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(encoder(images, training=True), encoder(images, training=False),
                               atol=1e-5)


def test_fine_tuning_unfreezes_from_the_start_layer_upward():
    encoder = build_encoder("resnet", None, 32, "conv3_block1_out")
    start = [layer.name for layer in encoder.layers].index("conv2_block1_1_conv")
    set_trainable(encoder, start)
    for index, layer in enumerate(encoder.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (index >= start and not is_bn), layer.name
    names = {w.path.split("/")[0] for w in encoder.trainable_weights}
    assert "conv1_conv" not in names and "conv2_block1_1_conv" in names
    assert not any("bn" in n for n in names)
    with pytest.raises(ValueError, match="finetune_start_layer must be in"):
        set_trainable(encoder, 10_000)


def test_feature_statistics_golden():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(10, 3, 4)) * np.array([1.0, 10.0, 0.1, 5.0]) + 7.0
    batches = [features[:4], features[4:]]
    scale, center = feature_statistics(batches)
    assert center is None
    np.testing.assert_allclose(scale, 1 / np.sqrt(features.reshape(-1, 4).var(0) + 1e-6),
                               rtol=1e-6)
    scale, center = feature_statistics(batches, center=True)
    np.testing.assert_allclose(center, features.mean(0), rtol=1e-9)
    residual = (features - features.mean(0)).reshape(-1, 4)
    np.testing.assert_allclose(scale, 1 / np.sqrt(residual.var(0) + 1e-6), rtol=1e-6)
    layer = FeatureStandardization(center=True)
    layer.build(features.shape)
    layer.set_statistics(scale, center)
    standardised = np.asarray(layer(features.astype("float32"))).reshape(-1, 4)
    np.testing.assert_allclose(standardised.std(0), 1.0, atol=1e-3)
    assert layer.get_config()["center"] is True and "scale" not in layer.get_config()
    assert FeatureStandardization.from_config(layer.get_config()).get_config() == \
        layer.get_config()
    with pytest.raises(ValueError, match="built with a center; got none"):
        layer.set_statistics(scale)


def test_image_captioner_end_to_end_and_reload(tmp_path):
    config = CaptionerConfig(vocabulary=["<start>", "x", "<eos>"], cnn="resnet",
                             cnn_weights="none", cnn_layer="conv3_block4_out", image_size=32,
                             emb_dim=4, z_dim=4, lstm_dim=4, use_sentinel=True)
    model = Captioner(config)
    assert (model.config.num_regions, model.config.feature_dim) == (16, 512)
    images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype("float32")
    words = np.array([[[1, 2, 2, 3]], [[1, 2, 3, 0]]], "int32")
    logits = np.asarray(model({"images": images, "words": words}))
    assert logits.shape == (2, 1, 4, 4)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded({"images": images, "words": words}), logits, atol=1e-5)
    encoded = loaded.encode(images)
    log_probs, _, alpha, beta = loaded.step(encoded, words[:, 0, 0], loaded.initial_state(2))
    np.testing.assert_allclose(log_probs, logits[:, 0, 0] - np.log(
        np.exp(logits[:, 0, 0]).sum(-1, keepdims=True)), atol=1e-5)
    assert alpha.shape == (2, 16) and beta.shape == (2,)

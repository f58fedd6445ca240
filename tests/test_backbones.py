"""The backbone registry: every entry builds, preprocesses and fine-tunes as its row below says.

Each network is built once (random weights, 64 px: a 2 x 2 grid, as every network here
downsamples by 32), by a module-scoped fixture.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest

from imcap.models.backbones import BACKBONES, Backbone, backbone
from imcap.models.config import CNN_NAMES
from imcap.models.encoder import build_encoder, region_layer, set_trainable
from imcap.models.preprocessing import preprocess_images, preprocessor

SIZE = 64
# name: keras.applications constructor, preprocessing, channels D of the default grid, the first
# layer with weights that fine-tuning from the default start trains, a stem layer it keeps
# frozen, and a block output a bad cnn_layer's error lists
EXPECTED = {
    "resnet": ("ResNet50", "caffe", 2048, "conv2_block1_1_conv", "conv1_conv",
               "conv4_block6_out"),
    "resnet101": ("ResNet101", "caffe", 2048, "conv2_block1_1_conv", "conv1_conv",
                  "conv4_block23_out"),
    "resnet152": ("ResNet152", "caffe", 2048, "conv2_block1_1_conv", "conv1_conv",
                  "conv4_block36_out"),
    "vgg16": ("VGG16", "caffe", 512, "block2_conv1", "block1_conv2", "block4_pool"),
    "vgg19": ("VGG19", "caffe", 512, "block2_conv1", "block1_conv2", "block4_pool"),
    "efficientnetv2s": ("EfficientNetV2S", "none", 1280, "block1a_project_conv", "stem_conv",
                        "block6o_add"),
    "convnext_tiny": ("ConvNeXtTiny", "none", 768,
                      "convnext_tiny_stage_0_block_0_depthwise_conv", "convnext_tiny_stem",
                      "convnext_tiny_downsampling_block_2"),
}


def test_every_entry_has_its_expectations_and_cnn_names_are_the_registry():
    assert set(EXPECTED) == set(BACKBONES)
    assert CNN_NAMES == tuple(BACKBONES)
    from imcap.args import get_parser
    cnn = next(a for a in get_parser()._actions if a.dest == "cnn")
    assert tuple(cnn.choices) == CNN_NAMES
    for name, (application, mode, *_) in EXPECTED.items():
        assert (BACKBONES[name].application, BACKBONES[name].preprocessing) == \
            (application, mode), name
        assert BACKBONES[name].constructor() is getattr(keras.applications, application)


def test_the_registry_imports_no_keras():
    code = ("import sys, imcap.models.config, imcap.models.backbones; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module", params=list(BACKBONES))
def built(request):
    """(name, encoder) of each backbone at SIZE px with random weights."""
    return request.param, build_encoder(request.param, None, SIZE)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")


def test_region_grid(built, images):
    name, encoder = built
    grid = ((SIZE // 32) ** 2, EXPECTED[name][2])  # K = 2 x 2 at 64 px, D
    assert encoder.output.shape[1:] == grid
    assert encoder(images).shape == (2,) + grid


def test_networks_without_caffe_mode_keep_their_own_preprocessing_layer(built):
    name, encoder = built
    own = [layer for layer in encoder.layers[:3]
           if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))]
    assert len(own) == (EXPECTED[name][1] == "none"), name


def test_fine_tuning_from_the_default_start_layer(built, images):
    name, encoder = built
    start = backbone(name).finetune_start_layer
    first_trained, stem_layer = EXPECTED[name][3:5]
    set_trainable(encoder, start)
    names = [layer.name for layer in encoder.layers]
    assert names.index(stem_layer) < start <= names.index(first_trained)
    with_weights = [layer.name for layer in encoder.layers if layer.trainable_weights]
    assert with_weights[0] == first_trained
    for index, layer in enumerate(encoder.layers):
        inner = [layer] + (list(layer.layers) if isinstance(layer, keras.Model) else [])
        for sub in inner:
            if index < start or isinstance(sub, keras.layers.BatchNormalization):
                assert not sub.trainable_weights, sub.name
            elif sub.weights:
                assert sub.trainable, sub.name
    if name == "convnext_tiny":  # LayerNormalization is trained like any layer above the stem
        assert any(isinstance(layer, keras.layers.LayerNormalization) and layer.trainable
                   for layer in encoder.layers[start:])
    # BatchNormalization frozen and the network's own Dropout off: training mode computes the
    # features that inference (the feature cache) does
    np.testing.assert_allclose(encoder(images, training=True), encoder(images, training=False),
                               atol=1e-5)
    set_trainable(encoder)
    assert encoder.trainable_weights == []


def test_a_bad_cnn_layer_lists_the_block_outputs(built):
    name, encoder = built
    listed = EXPECTED[name][5]
    with pytest.raises(ValueError) as error:
        region_layer(encoder, name, "conv9")
    message = str(error.value)
    assert message.startswith(f"cnn_layer 'conv9' is not a layer of {name}; block outputs are ")
    assert listed in message.rstrip(".").split(", ") and "\n" not in message
    assert len(region_layer(encoder, name, listed).output.shape) == 4  # a grid


@pytest.mark.parametrize("name", list(BACKBONES))
def test_preprocessing_of_a_known_pixel(name):
    pixel = np.array([[[[10, 20, 30]]]], "uint8")  # RGB
    expected = {"caffe": [30 - 103.939, 20 - 116.779, 10 - 123.68],  # BGR minus the mean
                "none": [10.0, 20.0, 30.0]}[EXPECTED[name][1]]
    out = preprocess_images(pixel, name)
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out).reshape(3), expected, atol=1e-5)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_preprocessor_wants_bgr_and_gives_the_same_from_either_order(name):
    preprocess = preprocessor(name)
    assert preprocess.wants_bgr == (EXPECTED[name][1] == "caffe")
    rgb = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype("uint8")
    np.testing.assert_array_equal(preprocess(rgb[..., ::-1].copy(), bgr=True), preprocess(rgb))


def test_an_unknown_name_is_one_line_naming_it():
    for call in (backbone, preprocessor, lambda name: build_encoder(name, None, SIZE),
                 lambda name: preprocess_images(np.zeros((1, 32, 32, 3)), name)):
        with pytest.raises(ValueError) as error:
            call("alexnet")
        assert str(error.value) == (f"cnn must be one of {', '.join(BACKBONES)}, "
                                    f"got 'alexnet'.")


def test_an_entry_is_checked_and_its_application_found_when_built():
    entry = dict(name="x", application="ResNet50", preprocessing="caffe", default_layer=None,
                 finetune_start_layer=6, min_image_size=32, description="x")
    with pytest.raises(ValueError, match="^preprocessing of backbone x must be one of caffe, "
                                         "none, got 'tf'.$"):
        Backbone(**dict(entry, preprocessing="tf"))
    assert Backbone(**dict(entry, application=len)).constructor() is len
    with pytest.raises(ValueError, match="^backbone x names 'ResNet7', which is not in "
                                         "keras.applications"):
        Backbone(**dict(entry, application="ResNet7")).constructor()

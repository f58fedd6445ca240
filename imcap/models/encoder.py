"""The CNN encoder: a keras.applications network cut at a convolutional block, as region features."""

import os
import re

import keras

from imcap.models.config import CNN_NAMES

CNNS = dict(zip(CNN_NAMES, (keras.applications.ResNet50, keras.applications.VGG16,
                            keras.applications.VGG19)))
MIN_IMAGE_SIZE = 32  # keras.applications' own minimum for these networks


def resolve_weights(cnn_weights):
    """``"imagenet"``, ``None`` (from ``"none"``), or an existing local ``.h5`` / ``.weights.h5``."""
    if cnn_weights is None or str(cnn_weights).lower() == "none":
        return None
    if cnn_weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(cnn_weights):
        raise ValueError(f"cnn_weights must be 'imagenet', 'none' or an existing weights file, "
                         f"got {cnn_weights!r} (no such file).")
    return cnn_weights


_FETCH_FAILURE = re.compile(r"URL fetch failure on (\S+?): (.*)", re.DOTALL)


def keras_cache_folder():
    """Where ``keras.utils.get_file`` keeps downloaded weights: ``$KERAS_HOME/models`` (by
    default ``~/.keras/models``)."""
    try:
        from keras.src.backend.config import keras_home
        home = os.path.expanduser(keras_home())
    except ImportError:  # another Keras layout: its documented default
        home = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(home, os.W_OK):  # get_file's own fallback
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def download_error(cnn, error):
    """The one-line ``ValueError`` for a failed download of ImageNet weights, or None when
    ``error`` is something else.

    ``keras.utils.get_file`` raises a bare ``Exception("URL fetch failure on URL: CODE --
    REASON")`` (from the ``urllib.error.URLError`` or ``HTTPError``) and removes its partial file.
    """
    match = _FETCH_FAILURE.match(str(error))
    if type(error) is not Exception or not match:
        return None
    url, reason = match.group(1), " ".join(match.group(2).split())
    reason = reason[len("None -- "):] if reason.startswith("None -- ") else reason  # no errno
    cached = os.path.join(keras_cache_folder(), url.rsplit("/", 1)[-1])
    return ValueError(
        f"cannot download the ImageNet weights of {cnn} from {url} ({reason}); fetch that file "
        f"where there is network and pass -cnn_weights FILE, or put it at {cached} (where Keras "
        f"looks before downloading), or use -cnn_weights none (random initialisation)")


def build_encoder(cnn="resnet", cnn_weights="imagenet", image_size=256, cnn_layer=None):
    """Builds ``images (B, S, S, 3) -> region features (B, K, D)`` as a functional model.

    Args:
        cnn: ``resnet`` (ResNet-50), ``vgg16`` or ``vgg19``.
        cnn_weights: ``"imagenet"`` (Keras downloads and caches them), ``None`` / ``"none"``
            (random initialisation), or a path to a weights file of the same network.

    Raises:
        ValueError: bad arguments, or ``"imagenet"`` weights that cannot be downloaded (one line
            naming the URL, the file to provide instead and ``-cnn_weights none``).
        image_size: S; images are preprocessed as keras.applications expects (caffe mode).
        cnn_layer: name of the layer whose output is the grid (default: the last conv block,
            ResNet-50 ``conv5_block3_out``, 8 x 8 x 2048 at 256 px; e.g. ``conv4_block6_out``).

    Returns:
        The encoder model; its output has K = H x W regions of D channels. Its layers take the
        dtype policy in force (see ``imcap.models.precision.policy_scope``).
    """
    if cnn not in CNNS:
        raise ValueError(f"cnn must be one of {', '.join(CNNS)}, got {cnn!r}.")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size} is too small for {cnn}: keras.applications "
                         f"needs at least {MIN_IMAGE_SIZE} px.")
    weights = resolve_weights(cnn_weights)
    local_file = weights not in (None, "imagenet")
    # === Layers ===
    images = keras.Input((image_size, image_size, 3), name="images")
    try:
        base = CNNS[cnn](include_top=False, weights=None if local_file else weights,
                         input_tensor=images)
    except Exception as e:
        offline = download_error(cnn, e)
        if offline is None:
            raise
        raise offline from e
    if local_file:
        base.load_weights(weights)
    try:
        grid_layer = base.get_layer(cnn_layer) if cnn_layer else base.layers[-1]
    except ValueError:
        names = [layer.name for layer in base.layers if layer.name.endswith(("_out", "_pool"))]
        raise ValueError(f"cnn_layer {cnn_layer!r} is not a layer of {cnn}; block outputs are "
                         f"{', '.join(names)}.") from None
    grid = grid_layer.output
    height, width, channels = grid.shape[1:]
    # === Functional model ===
    regions = keras.layers.Reshape((height * width, channels), name="regions")(grid)
    return keras.Model(images, regions, name=f"{cnn}_encoder")


def set_trainable(encoder, finetune_start_layer=None):
    """Freezes the encoder, or fine-tunes it from layer ``finetune_start_layer`` upward.

    Layers before ``finetune_start_layer`` (the stem) stay frozen; so does every
    BatchNormalization layer, which therefore always runs in inference mode with its ImageNet
    statistics (captioning batches are too small and too correlated to re-estimate them).
    ``None`` freezes everything. The seed had this inverted: it trained the layers *below* the
    index and froze the rest.
    """
    if finetune_start_layer is None:
        encoder.trainable = False
        return
    if finetune_start_layer < 0 or finetune_start_layer >= len(encoder.layers):
        raise ValueError(f"finetune_start_layer must be in [0, {len(encoder.layers)}), "
                         f"got {finetune_start_layer}.")
    encoder.trainable = True
    for index, layer in enumerate(encoder.layers):
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= finetune_start_layer and not is_batch_norm

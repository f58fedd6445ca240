"""The CNN encoder: a keras.applications network cut at a convolutional block, as region features.

Which networks, and how each is built, fed and fine-tuned: ``imcap.models.backbones``.
"""

import os
import re

import keras

from imcap.models.backbones import backbone

# the layers a bad cnn_layer's error lists: ResNet block outputs (conv4_block6_out), VGG block
# poolings (block4_pool), EfficientNetV2 block outputs (block6o_add; the letter before "_add"
# leaves out ResNet's conv4_block6_add, the same block before its ReLU) and its top_activation,
# and ConvNeXt's stem and downsampling blocks (its stage outputs are the sum of a residual
# "+", which is not a layer that get_layer can name)
BLOCK_OUTPUTS = re.compile(
    r"top_activation|.*(_out|_pool|[a-z]_add|_stem|_downsampling_block_\d)")


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

    The network is deterministic: BatchNormalization runs with its ImageNet statistics once
    ``set_trainable`` has frozen it, and the network's own Dropout layers (EfficientNetV2's
    stochastic depth) are switched off (rate 0), so that the features of an image in training
    mode are those of the feature cache.

    Args:
        cnn: a name of ``imcap.models.backbones.BACKBONES`` (``resnet`` is ResNet-50).
        cnn_weights: ``"imagenet"`` (Keras downloads and caches them), ``None`` / ``"none"``
            (random initialisation), or a path to a weights file of the same network.
        image_size: S, at least the backbone's ``min_image_size``; images are preprocessed as
            ``imcap.models.preprocessing.preprocessor(cnn)`` does.
        cnn_layer: name of the layer whose output is the grid (default: the backbone's
            ``default_layer``, for all of them the last block: ResNet-50 ``conv5_block3_out``,
            8 x 8 x 2048 at 256 px; e.g. ``conv4_block6_out``).

    Returns:
        The encoder model; its output has K = H x W regions of D channels. Its layers take the
        dtype policy in force (see ``imcap.models.precision.policy_scope``).

    Raises:
        ValueError: bad arguments (an unknown ``cnn``, or a ``cnn_layer`` that is not a layer
            of it: one line listing its block outputs), or ``"imagenet"`` weights that cannot
            be downloaded (one line naming the URL, the file to provide instead and
            ``-cnn_weights none``).
    """
    spec = backbone(cnn)
    if image_size < spec.min_image_size:
        raise ValueError(f"image_size {image_size} is too small for {cnn}: keras.applications "
                         f"needs at least {spec.min_image_size} px.")
    weights = resolve_weights(cnn_weights)
    local_file = weights not in (None, "imagenet")
    # the network's own preprocessing layer, which takes RGB in 0..255
    options = {"include_preprocessing": True} if spec.preprocessing == "none" else {}
    # === Layers ===
    images = keras.Input((image_size, image_size, 3), name="images")
    try:
        base = spec.constructor()(include_top=False, weights=None if local_file else weights,
                                  input_tensor=images, **options)
    except Exception as e:
        offline = download_error(cnn, e)
        if offline is None:
            raise
        raise offline from e
    if local_file:
        base.load_weights(weights)
    for layer in base.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # read when the layer is called, so the graph built above obeys it
    grid_layer = region_layer(base, cnn, cnn_layer or spec.default_layer)
    grid = grid_layer.output
    height, width, channels = grid.shape[1:]
    # === Functional model ===
    regions = keras.layers.Reshape((height * width, channels), name="regions")(grid)
    return keras.Model(images, regions, name=f"{cnn}_encoder")


def region_layer(network, cnn, layer_name=None):
    """The layer of ``network`` whose output is the region grid.

    Args:
        network: the keras.applications network.
        cnn: its ``-cnn`` name, for the error message.
        layer_name: the layer's name; None for the last layer.

    Returns:
        The layer.

    Raises:
        ValueError: ``network`` has no such layer; one line listing its block outputs
            (``block_outputs``).
    """
    if layer_name is None:
        return network.layers[-1]
    try:
        return network.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"cnn_layer {layer_name!r} is not a layer of {cnn}; block outputs "
                         f"are {', '.join(block_outputs(network))}.") from None


def block_outputs(network):
    """The names of the layers of ``network`` that end a block or a stage (``BLOCK_OUTPUTS``):
    what ``cnn_layer`` usually names."""
    return [layer.name for layer in network.layers if BLOCK_OUTPUTS.fullmatch(layer.name)]


def set_trainable(encoder, finetune_start_layer=None):
    """Freezes the encoder, or fine-tunes it from layer ``finetune_start_layer`` upward.

    Layers before ``finetune_start_layer`` (the stem; each backbone's default is its
    ``finetune_start_layer``) stay frozen; so does every BatchNormalization layer, also inside
    a nested block, which therefore always runs in inference mode with its ImageNet statistics
    (captioning batches are too small and too correlated to re-estimate them). ConvNeXt's
    LayerNormalization layers keep no statistics (they normalise each position over its
    channels): above the start they are trained like any other layer. ``None`` freezes
    everything. imcap_keras had this inverted: it trained the layers *below* the index and froze
    the rest.

    Args:
        encoder: a model from ``build_encoder``.
        finetune_start_layer: an index into ``encoder.layers``, or None.

    Raises:
        ValueError: ``finetune_start_layer`` is not an index of ``encoder.layers``.
    """
    if finetune_start_layer is None:
        encoder.trainable = False
        return
    if finetune_start_layer < 0 or finetune_start_layer >= len(encoder.layers):
        raise ValueError(f"finetune_start_layer must be in [0, {len(encoder.layers)}), "
                         f"got {finetune_start_layer}.")
    encoder.trainable = True
    for index, layer in enumerate(encoder.layers):
        layer.trainable = index >= finetune_start_layer  # a nested block: all of its layers
    for layer in nested_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def nested_layers(model):
    """Every layer of ``model``, and those of the blocks that are models themselves (ConvNeXt's
    stem and downsampling blocks are Sequentials)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)

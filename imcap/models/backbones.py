"""The CNN backbones an encoder can use: one registry, ``BACKBONES`` (name -> ``Backbone``).

Adding a backbone is one ``Backbone`` entry in ``_ENTRIES``: ``-cnn`` accepts its name,
``build_encoder`` builds it, ``preprocessor`` prepares images for it, and stage 2 fine-tunes it
from its ``finetune_start_layer`` by default.

This module imports nothing from Keras (the application is looked up on
``keras.applications`` when an encoder is built), so that ``config.CNN_NAMES`` and the
command-line help list the names without starting TensorFlow.
"""

import dataclasses

# what each preprocessing mode does to images in 0..255
PREPROCESSING_MODES = {
    "caffe": "RGB -> BGR, minus the ImageNet mean (keras.applications' caffe mode)",
    "none": "RGB in 0..255 as float32; the network's own first layer normalises it",
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A keras.applications network as an encoder: how to build it, feed it and fine-tune it.

    Layer indices count the layers of the encoder ``build_encoder`` returns, which are the
    network's own (``include_top=False``, index 0 is the input) up to the region layer, then a
    ``Reshape``.

    Attributes:
        name: the ``-cnn`` name.
        application: the name of a ``keras.applications`` constructor (``"ResNet101"``, looked
            up when an encoder is built), or a callable taking the same arguments
            (``include_top``, ``weights``, ``input_tensor``; and ``include_preprocessing`` when
            ``preprocessing`` is ``"none"``).
        preprocessing: ``"caffe"`` (the network takes BGR images minus the ImageNet mean) or
            ``"none"`` (it takes RGB in 0..255: ``build_encoder`` passes
            ``include_preprocessing=True``, which keeps its own normalisation layer).
        default_layer: the name of the layer whose output is the region grid when ``-cnn_layer``
            is not given; None for the last layer of the ``include_top=False`` network.
        finetune_start_layer: the index of the first layer stage 2 fine-tunes by default: the
            layers below it (the stem) stay frozen.
        min_image_size: the smallest image side the network accepts, in pixels.
        description: one line for the help and the README.
    """

    name: str
    application: object
    preprocessing: str
    finetune_start_layer: int
    description: str
    default_layer: str | None = None
    min_image_size: int = 32

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"preprocessing of backbone {self.name} must be one of "
                             f"{', '.join(PREPROCESSING_MODES)}, got {self.preprocessing!r}.")
        if self.finetune_start_layer < 0:
            raise ValueError(f"finetune_start_layer of backbone {self.name} must be "
                             f"non-negative, got {self.finetune_start_layer}.")
        if self.min_image_size < 1:
            raise ValueError(f"min_image_size of backbone {self.name} must be positive, "
                             f"got {self.min_image_size}.")

    @property
    def wants_bgr(self):
        """Whether the network's input has its channels in BGR order (caffe mode)."""
        return self.preprocessing == "caffe"

    def constructor(self):
        """The callable that builds the network (imports Keras when ``application`` is a
        name)."""
        if callable(self.application):
            return self.application
        import keras

        constructor = getattr(keras.applications, self.application, None)
        if constructor is None:
            raise ValueError(f"backbone {self.name} names {self.application!r}, which is not "
                             f"in keras.applications {keras.__version__}.")
        return constructor


# finetune_start_layer: the index just past each network's stem, so that stage 2 trains every
# stage above it and leaves the low-level filters of the stem as ImageNet made them.
# - ResNets: 6, pool1_pool, as imcap_keras' default; 0-5 are the input, conv1_pad, conv1_conv,
#   conv1_bn, conv1_relu and pool1_pad. pool1_pool has no weights, so the first layer trained
#   is conv2_block1_1_conv. ResNet-101 and -152 share ResNet-50's stem, so also 6.
# - VGGs: 3, block1_pool. VGG has no stem of its own; block1 (two 3x3 convolutions at full
#   resolution, 0-2 with the input) plays its part and ends in a pooling layer, as the ResNet
#   stem does; the first layer trained is block2_conv1.
# - EfficientNetV2-S: 5, block1a_project_conv; 0-4 are the input, the Rescaling of its own
#   preprocessing, stem_conv, stem_bn and stem_activation.
# - ConvNeXt-T: 3, the first block of stage 0 (convnext_tiny_stage_0_block_0_depthwise_conv);
#   0-2 are the input, the ImageNet Normalization of its own preprocessing and the stem (one
#   Sequential layer: the 4x4 stride-4 patchify convolution and its LayerNormalization).
_ENTRIES = (
    Backbone(name="resnet", application="ResNet50", preprocessing="caffe",
             finetune_start_layer=6,
             description="ResNet-50 (He et al. 2016), imcap_keras' encoder"),
    Backbone(name="resnet101", application="ResNet101", preprocessing="caffe",
             finetune_start_layer=6,
             description="ResNet-101 (He et al. 2016)"),
    Backbone(name="resnet152", application="ResNet152", preprocessing="caffe",
             finetune_start_layer=6,
             description="ResNet-152 (He et al. 2016), the paper's encoder"),
    Backbone(name="vgg16", application="VGG16", preprocessing="caffe",
             finetune_start_layer=3,
             description="VGG-16 (Simonyan and Zisserman 2015)"),
    Backbone(name="vgg19", application="VGG19", preprocessing="caffe",
             finetune_start_layer=3,
             description="VGG-19 (Simonyan and Zisserman 2015)"),
    Backbone(name="efficientnetv2s", application="EfficientNetV2S", preprocessing="none",
             finetune_start_layer=5,
             description="EfficientNetV2-S (Tan and Le 2021)"),
    Backbone(name="convnext_tiny", application="ConvNeXtTiny", preprocessing="none",
             finetune_start_layer=3,
             description="ConvNeXt-T (Liu et al. 2022)"),
)
BACKBONES = {entry.name: entry for entry in _ENTRIES}


def backbone(name):
    """The registry entry of ``name``.

    Args:
        name: a ``-cnn`` name, a key of ``BACKBONES``.

    Returns:
        Its ``Backbone``.

    Raises:
        ValueError: ``name`` is not in the registry (one line listing the names).
    """
    if name not in BACKBONES:
        raise ValueError(f"cnn must be one of {', '.join(BACKBONES)}, got {name!r}.")
    return BACKBONES[name]

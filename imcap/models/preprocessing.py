"""What an encoder expects of an image, by its backbone's preprocessing mode.

``"caffe"`` (ResNets, VGGs): keras.applications' caffe mode, BGR minus the ImageNet mean.
``"none"`` (EfficientNetV2, ConvNeXt): RGB in 0..255 as float32; the network's own first layer
normalises it.
"""

import functools

import tensorflow as tf

from imcap.models.backbones import backbone

# the ImageNet mean of caffe mode, in BGR order
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_encoder(cnn):
    """The ``Backbone`` of ``cnn``; a one-line ValueError naming it when it has none."""
    return backbone(cnn)


def preprocess_images(images, cnn="resnet", bgr=False):
    """Preprocesses (B, S, S, 3) images in 0..255 for ``cnn``, as its network expects.

    Args:
        images: (B, S, S, 3) images in 0..255, any numeric dtype.
        cnn: a name of ``imcap.models.backbones.BACKBONES``.
        bgr: the channels are in BGR order (RGB otherwise).

    Returns:
        (B, S, S, 3) float32: caffe mode, BGR minus ``CAFFE_MEAN_BGR``; mode ``"none"``, RGB
        in 0..255.
    """
    spec = check_encoder(cnn)
    images = tf.cast(images, tf.float32)
    if bgr != spec.wants_bgr:
        images = tf.gather(images, [2, 1, 0], axis=-1)  # RGB <-> BGR
    if spec.preprocessing == "caffe":
        images = images - tf.constant(CAFFE_MEAN_BGR, tf.float32)
    return images


def preprocessor(cnn):
    """``preprocess_images`` for ``cnn``: the function ``CaptionData.dataset`` takes.

    Returns:
        ``f(images, bgr=False)``, with ``f.wants_bgr``: the channel order that ``cnn``
        takes, so that a reader can give ``f`` images in that order (``bgr=f.wants_bgr``) and
        ``f`` leaves them as they are.
    """
    spec = check_encoder(cnn)
    preprocess = functools.partial(preprocess_images, cnn=cnn)
    preprocess.wants_bgr = spec.wants_bgr
    return preprocess

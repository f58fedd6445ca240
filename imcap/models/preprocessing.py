"""What an encoder expects of an image: keras.applications' "caffe" preprocessing."""

import functools

import tensorflow as tf

from imcap.models.config import CNN_NAMES

# ResNet50, VGG16, VGG19: RGB -> BGR, minus the ImageNet mean
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def check_encoder(cnn):
    if cnn not in CNN_NAMES:
        raise ValueError(f"cnn must be one of {', '.join(CNN_NAMES)}, got {cnn!r}")


def preprocess_images(images, cnn="resnet", bgr=False):
    """Preprocesses (B, S, S, 3) images in 0..255 for ``cnn``, as keras.applications does.

    ``bgr=True`` says the channels are already in BGR order.
    """
    check_encoder(cnn)
    if not bgr:
        images = tf.gather(images, [2, 1, 0], axis=-1)
    return tf.cast(images, tf.float32) - tf.constant(CAFFE_MEAN_BGR, tf.float32)


def preprocessor(cnn):
    """``preprocess_images`` for ``cnn``: the function ``CaptionData.dataset`` takes."""
    check_encoder(cnn)
    return functools.partial(preprocess_images, cnn=cnn)

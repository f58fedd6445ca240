"""CaptionExpansion and CaptionCollapse: per-image tensors repeated once per caption, and
per-caption outputs grouped back by image."""

import numpy as np

from imcap.models.caption_collapse import CaptionCollapse
from imcap.models.caption_expansion import CaptionExpansion


def test_expansion_repeats_each_image_once_per_caption(layer_check):
    words = np.arange(2 * 3 * 4, dtype="int32").reshape(2, 3, 4)
    image = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    flat_words, repeated = layer_check(CaptionExpansion(name="expand"), [words, image],
                                       [(6, 4), (6, 2)], trainable_weights=0)
    np.testing.assert_array_equal(flat_words, words.reshape(6, 4))
    np.testing.assert_array_equal(repeated, np.repeat(image, 3, axis=0))  # rows i*3..i*3+2


def test_collapse_inverts_the_expansion(layer_check):
    words = np.ones((2, 3, 4), "int32")
    values = np.arange(6 * 4 * 5, dtype="float32").reshape(6, 4, 5)
    out = layer_check(CaptionCollapse(name="collapse"), [values, words], [(2, 3, 4, 5)],
                      trainable_weights=0)
    np.testing.assert_array_equal(out, values.reshape(2, 3, 4, 5))
    flat, _ = CaptionExpansion()([words, np.zeros((2, 1), "float32")])
    assert tuple(CaptionCollapse()([np.asarray(flat, "float32"), words]).shape) == (2, 3, 4)

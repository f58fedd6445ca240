"""PositionEmbedding: a learned (K, D) table added to every image's region features."""

import numpy as np

from imcap.models.position_embedding import PositionEmbedding


def test_it_adds_one_table_to_every_image(layer_check):
    features = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    layer = PositionEmbedding(name="position")
    out = np.asarray(layer_check(layer, features, [(3, 4, 5)], trainable_weights=1))
    table = np.asarray(layer.embeddings)
    assert table.shape == (4, 5) and np.abs(table).max() > 0
    np.testing.assert_allclose(out, features + table[None], atol=1e-6)

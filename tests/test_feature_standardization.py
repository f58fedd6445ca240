"""FeatureStandardization: (v - center) * scale, its statistics non-trainable weights."""

import numpy as np
import pytest

from imcap.models.feature_standardization import FeatureStandardization, feature_statistics


@pytest.mark.parametrize("center", [False, True])
def test_it_standardizes_with_saved_statistics(layer_check, center):
    features = np.random.default_rng(1).normal(3.0, 2.0, size=(6, 4, 5)).astype("float32")
    scale, mean = feature_statistics([features[:3], features[3:]], center=center)
    layer = FeatureStandardization(center=center, name="standardize")
    layer.build(features.shape)
    layer.set_statistics(scale, mean)
    out = np.asarray(layer_check(layer, features, [(6, 4, 5)], trainable_weights=0))
    expected = (features - (mean if center else 0.0)) * scale
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert len(layer.non_trainable_weights) == (2 if center else 1)


def test_until_its_statistics_are_set_it_is_the_identity():
    features = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(FeatureStandardization(center=True)(features), features)


def test_statistics_stream_in_float64_over_any_batches():
    features = np.random.default_rng(3).normal(size=(9, 2, 3))
    one, _ = feature_statistics([features])
    many, _ = feature_statistics([features[i:i + 2] for i in range(0, 9, 2)])
    np.testing.assert_allclose(one, many, rtol=1e-12)
    with pytest.raises(ValueError, match="at least one batch"):
        feature_statistics([])

"""--lrmults: per-variable learning-rate multipliers in Keras 3 optimizers."""

import keras
import numpy as np
import pytest

from imcap import args as imcap_args
from imcap.training import optimizers
from imcap.train import training_config


def two_layer_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="cnn_like")(inputs)
    outputs = keras.layers.Dense(2, name="decoder_like")(hidden)
    return keras.Model(inputs, outputs)


def deltas(name, multiplier, steps=3, accumulation_steps=1):
    """Weight changes after ``steps`` batches, with ``multiplier`` on the first layer."""
    model = two_layer_model()
    first = model.get_layer("cnn_like").trainable_variables
    optimizer = optimizers.make_optimizer(
        name, 0.01, clipvalue=5.0, accumulation_steps=accumulation_steps,
        lr_multiplier=multiplier, multiplied_variables=first if multiplier is not None else ())
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(1)
    before = model.get_weights()
    for _ in range(steps * accumulation_steps):
        model.train_on_batch(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    return [a - b for a, b in zip(model.get_weights(), before)]


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_the_multiplier_scales_exactly_the_chosen_variables_first_update(name):
    """On the first step every optimizer's update is linear in the learning rate."""
    plain, scaled = deltas(name, None, steps=1), deltas(name, 0.25, steps=1)
    np.testing.assert_allclose(scaled[0], 0.25 * plain[0], rtol=1e-4, atol=2e-7)  # kernel
    np.testing.assert_allclose(scaled[1], 0.25 * plain[1], rtol=1e-4, atol=2e-7)  # bias
    np.testing.assert_allclose(scaled[2], plain[2], rtol=1e-6, atol=2e-7)
    np.testing.assert_allclose(scaled[3], plain[3], rtol=1e-6, atol=2e-7)
    assert np.abs(plain[0]).max() > 1e-5


def test_sgd_over_several_steps_and_accumulation_equals_a_smaller_learning_rate():
    """SGD with multiplier m on a layer equals plain SGD at lr*m on that layer: the decoder
    layer sees the same first step, and a multiplier of 0 freezes the layer exactly."""
    frozen = deltas("SGD", 0.0, steps=2, accumulation_steps=2)
    assert not np.any(frozen[0]) and not np.any(frozen[1])
    assert np.abs(frozen[2]).max() > 1e-5
    plain = deltas("SGD", None, steps=1, accumulation_steps=2)
    half = deltas("SGD", 0.5, steps=1, accumulation_steps=2)
    np.testing.assert_allclose(half[0], 0.5 * plain[0], rtol=1e-4, atol=2e-7)
    np.testing.assert_allclose(half[2], plain[2], rtol=1e-6, atol=2e-7)


def test_the_optimizer_config_round_trips():
    model = two_layer_model()
    optimizer = optimizers.make_optimizer("adam", 0.1, lr_multiplier=0.5,
                                          multiplied_variables=model.layers[1].weights)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer)
    assert restored.lr_multiplier == 0.5
    assert restored.multiplied_paths == ["cnn_like/bias", "cnn_like/kernel"]


def test_the_trainer_multiplies_the_trainable_cnn_only_with_lrmults():
    parsed = training_config(imcap_args.parse_args(["--lrmults", "-lrmult_conv", "0.1"]))
    cnn = two_layer_model().layers[1].weights
    optimizer = parsed.optimizer.make(1e-3, cnn)
    assert optimizer.lr_multiplier == pytest.approx(0.1) and len(optimizer.multiplied_paths) == 2
    assert type(parsed.optimizer.make(1e-3, [])) is keras.optimizers.Adam  # stage 1
    plain = training_config(imcap_args.parse_args([]))
    assert type(plain.optimizer.make(1e-3, cnn)) is keras.optimizers.Adam

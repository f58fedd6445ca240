"""Self-critical training's core: the loss is REINFORCE (its gradient equals one computed by hand
through the step-by-step decoder), and on a toy task where cross-entropy leaves the model split
between two phrasings, SCST moves the probability to the one CIDEr-D prefers (its mean baseline,
the other samples' mean, averaging to the mean reward)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from imcap.evaluation.cider_reward import CiderD
from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.training.scst import SelfCritical, scst_loss, sequence_log_probs

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]
ID = {w: i + 1 for i, w in enumerate(VOCAB)}
END = ID["<eos>"]
K, D = 3, 4


def tiny_captioner(seed=0, **changes):
    keras.utils.set_random_seed(seed)
    values = dict(vocabulary=VOCAB, input_images=False, num_regions=K, feature_dim=D,
                  emb_dim=8, z_dim=8, lstm_dim=8, dr_ratio=0.0, use_sentinel=True,
                  max_length=6)
    return Captioner(CaptionerConfig(**dict(values, **changes)))


def ids(caption, length):
    row = [ID[w] for w in caption.split()] + [END]
    return row[:length] + [0] * (length - len(row))


def hand_log_prob(model, features, row):
    """log p of one caption through ``encode`` and ``step``, word by word up to <eos>."""
    encoded = model.encode(features[None], from_features=True)
    state, previous, total = model.initial_state(1), tf.constant([ID["<start>"]]), 0.0
    for word in row:
        if word == 0:
            break
        log_probs, state, _, _ = model.step(encoded, previous, state)
        total += log_probs[0, word]
        previous = tf.constant([word])
        if word == END:
            break
    return total


def test_loss_gradient_is_reinforce_computed_by_hand():
    model = tiny_captioner()
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(2, K, D)).astype("float32"))
    words = tf.constant([[ids("a red square", 5), ids("blue", 5), ids("a a a a a", 5)],
                         [ids("circle", 5), ids("a blue circle", 5), ids("red red", 5)]])
    assert words.shape == (2, 3, 5) and int(words[0, 2, -1]) != END  # one caption never ends
    advantages = tf.constant([[0.7, -0.2, -0.5], [1.5, 0.0, -1.5]])
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = scst_loss(model, features, words, advantages)
    got = tape.gradient(loss, variables)
    with tf.GradientTape() as tape:
        terms = [advantages[b, j] * hand_log_prob(model, features[b], words[b, j].numpy())
                 for b in range(2) for j in range(3)]
        expected_loss = -tf.add_n(terms) / 6.0
    expected = tape.gradient(expected_loss, variables)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-5)
    assert len(got) == len(variables) > 10
    for g, e, v in zip(got, expected, variables):
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(),
                                   tf.convert_to_tensor(e).numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=v.path)
    # the log-probabilities themselves, per caption
    np.testing.assert_allclose(
        sequence_log_probs(model, features, words).numpy(),
        [[float(hand_log_prob(model, features[b], words[b, j].numpy())) for j in range(3)]
         for b in range(2)], rtol=1e-5)


REFERENCES = {1: ["a red square"] * 4, 2: ["a blue circle"] * 4}


def toy_features():
    rng = np.random.default_rng(1)
    return rng.normal(size=(2, K, D)).astype("float32")


def phrase_log_probs(model, features):
    """log p of "a red square" and "a square red" for image 1."""
    words = tf.constant([[ids("a red square", 5), ids("a square red", 5)]])
    return sequence_log_probs(model, tf.constant(features[:1]), words).numpy()[0]


def cross_entropy_split(model, features):
    """Teacher-forced training where image 1 has both phrasings equally often, image 2 one."""
    captions = {1: ["a red square", "a square red"], 2: ["a blue circle", "a blue circle"]}
    rows = [(i - 1, [ID["<start>"]] + ids(c, 5)) for i in (1, 2) for c in captions[i]]
    x = {"features": np.stack([features[i] for i, _ in rows])[:, :, :],
         "words": np.array([r[:-1] for _, r in rows], "int32")[:, None]}
    y = np.array([r[1:] for _, r in rows], "int32")[:, None]
    model.compile(keras.optimizers.Adam(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch = tf.data.Dataset.from_tensors((x, y, (y > 0).astype("float32")))
    model.fit(batch.repeat(150), verbose=0)  # 150 steps in one epoch (no per-epoch overhead)


def scst_batches(features, batches):
    x = {"features": np.repeat(features, 2, axis=0),
         "words": np.zeros((4, 1, 5), "int32")}
    y = np.zeros((4, 1, 5), "int32")
    data = tf.data.Dataset.from_tensors((x, y, y.astype("float32"),
                                         np.array([1, 2, 1, 2], "int64")))
    return data.repeat(batches)


def test_scst_moves_probability_to_the_high_cider_phrasing():
    features = toy_features()
    model = tiny_captioner(seed=2)
    cross_entropy_split(model, features)
    before = phrase_log_probs(model, features)
    # cross-entropy leaves both phrasings likely, neither dominant
    assert abs(before[0] - before[1]) < 1.0 and before.max() > np.log(0.2), before
    scorer = CiderD(REFERENCES)
    assert scorer.score(1, "a red square") > scorer.score(1, "a square red") + 1.0
    trainer = SelfCritical(model, scorer, sample_n=5, baseline="mean", seed=0)
    trainer.compile(keras.optimizers.Adam(0.01))
    logs = trainer.fit(scst_batches(features, 20), epochs=2, verbose=0, shuffle=False).history
    after = phrase_log_probs(model, features)
    assert after[0] > np.log(0.7) and after[0] - after[1] > 5.0, (before, after)
    assert logs["reward"][-1] > logs["reward"][0]
    # the mean baseline: the leave-one-out means of a step average to its mean reward
    np.testing.assert_allclose(logs["baseline"], logs["reward"], rtol=1e-5)
    assert all(0 < length <= 5 for length in logs["length"])


REPLICA_CALLS = """
import json
import tensorflow as tf
from imcap.training.distribute import make_strategy
from imcap.training.scst import sample_call
strategy = make_strategy("mirrored", cpu_devices=2)  # as train.py --strategy mirrored
print(json.dumps({"one_device": int(sample_call(tf.constant(7, tf.int64)))}))
calls = strategy.run(tf.function(lambda: sample_call(tf.constant(7, tf.int64))))
print(json.dumps({"replicas": sorted(int(c) for c in strategy.experimental_local_results(calls))}))
"""


def test_the_replicas_of_a_strategy_draw_their_samples_apart():
    """Under a strategy each replica samples its share of the batch, of the same shape: with the
    same seed they would draw the same random numbers for their rows. The call count the
    sampler is seeded with is the step on one device (what one device always drew, so a
    resumed run draws as before) and step x replicas + replica under MirroredStrategy."""
    done = subprocess.run([sys.executable, "-c", REPLICA_CALLS], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines == [{"one_device": 7}, {"replicas": [14, 15]}]

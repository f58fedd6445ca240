"""Benchmark: images/s of one self-critical training step, and where its time goes.

A step (``SelfCritical.train_step``, as ``fit`` runs it, in a ``tf.function``): sample n
captions per image in the graph, reward them with CIDEr-D (Python, ``tf.numpy_function``),
the mean-of-others baseline, then the teacher-forced log-probabilities of the samples, the
backward pass and Adam with value clipping. The split times the three parts on their own:
``sample`` (the sampler's graph), ``reward`` (CIDEr-D of the sampled captions) and
``gradient`` (loss, backward, update).

Workloads: the reference shapes of the peer (self-critical.pytorch's ``new_self_critical`` with
AdaAtt; ../shared/peer): 32 images x 5 samples, 49 regions x 2048, embedding / hidden /
attention 512, 9,488 words, 16 sampled words, random weights and features, ``<eos>`` free (with
random weights every sample runs all 16 steps, as the peer's do); and the demo's shapes (40
images, 64 x 1024, decoder 128 as the demo's since 2026-12-06, its vocabulary size, 17 words).
CIDEr-D's references: 1,000 images of five random 10-word captions (the step's images are the
first of them).

Prints one JSON object per line (``unit`` images/s; ``split_s``: median seconds of each part),
then peak RSS. Run it on an otherwise idle machine: ``python bench/scst.py`` (``--quick``).
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import imcap  # noqa: E402,F401 -- first: it sets how TensorFlow loads (imcap/__init__.py)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import arguments, report, summary  # noqa: E402
from imcap.evaluation.cider_reward import CiderD  # noqa: E402
from imcap.models.captioner import Captioner  # noqa: E402
from imcap.models.config import CaptionerConfig  # noqa: E402
from imcap.training.scst import SelfCritical, scst_loss  # noqa: E402

WORKLOADS = {  # images, samples, regions, channels, dim, vocabulary, max_length
    "reference": (32, 5, 49, 2048, 512, 9488, 17),
    "demo": (40, 5, 64, 1024, 128, 40, 18),
}


def make_trainer(vocab_size, regions, channels, dim, max_length, samples, seed=0):
    keras.utils.set_random_seed(seed)
    vocabulary = ["<start>", "<eos>"] + [f"w{i}" for i in range(vocab_size - 3)]
    config = CaptionerConfig(vocabulary=vocabulary, input_images=False, num_regions=regions,
                             feature_dim=channels, emb_dim=dim, z_dim=dim, lstm_dim=dim,
                             dr_ratio=0.5, use_sentinel=True, max_length=max_length)
    model = Captioner(config)
    rng = np.random.default_rng(seed)
    words = config.vocabulary.words
    references = {i: [" ".join(rng.choice(words[2:], 10)) for _ in range(5)]
                  for i in range(1000)}
    trainer = SelfCritical(model, CiderD(references), samples, "mean", max_length, seed)
    trainer.compile(keras.optimizers.Adam(5e-5, clipvalue=5.0))
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def median_seconds(function, repeats, warmup=2):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def run(name, shapes, repeats):
    images, samples, regions, channels, dim, vocab_size, max_length = shapes
    trainer = make_trainer(vocab_size, regions, channels, dim, max_length, samples)
    rng = np.random.default_rng(1)
    features = tf.constant(rng.normal(size=(images, regions, channels)).astype("float32"))
    ids = tf.constant(np.arange(images, dtype="int64"))
    x = {"features": features, "words": tf.zeros((images, 1, 1), tf.int32)}
    zeros = tf.zeros((images, 1, 1), tf.int32)
    step = tf.function(trainer.train_step)
    times = median_seconds(lambda: [float(v) for v in step((x, zeros, zeros, ids)).values()],
                           repeats)

    sample = tf.function(lambda: trainer.sampler.graph(features, call=1,
                                                       repeat=samples)["words"])
    words = sample().numpy()
    sample_s = median_seconds(lambda: sample().numpy(), repeats)
    repeated_ids = np.repeat(ids.numpy(), samples)
    reward_s = median_seconds(lambda: trainer._rewards(repeated_ids, words), repeats)
    advantages = tf.constant(rng.normal(size=(images, samples)).astype("float32"))
    grouped = tf.constant(words.reshape(images, samples, -1))
    variables = trainer.trainable_variables

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            loss = scst_loss(trainer.captioner, features, grouped, advantages)
        trainer.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    gradient_s = median_seconds(lambda: float(gradient()), repeats)
    lengths = (words > 0).sum(1)
    report(f"scst_{name}", "float32", "images/s", [images / t for t in times],
           images=images, samples=samples, regions=regions, channels=channels, dim=dim,
           vocab=vocab_size, sampled_words=max_length - 1,
           mean_sampled_length=round(float(lengths.mean()), 2),
           step_s=round(statistics.median(times), 4),
           split_s={"sample": round(statistics.median(sample_s), 4),
                    "reward": round(statistics.median(reward_s), 4),
                    "gradient": round(statistics.median(gradient_s), 4)})


def main():
    args, repeats = arguments(__doc__.split("\n\n")[0], 16)
    for name, shapes in WORKLOADS.items():
        if args.only and args.only not in name:
            continue
        run(name, shapes, repeats)
    summary()


if __name__ == "__main__":
    main()

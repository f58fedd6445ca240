"""Benchmark: captions/s of one training step on precomputed region features.

A step is the forward pass, masked cross-entropy (``sample_weight``), the backward pass and
Adam with value clipping (imcap_keras' ``-clip 5``), run by Keras' compiled ``train_on_batch``.
Default shapes are the reference's (self-critical.pytorch AdaAtt on this machine): 32 images,
49 regions x 2048 channels, embedding / hidden / attention 512, 9488 words, 17 decoder steps,
recurrent dropout 0.5 (one mask per LSTM gate; imcap_keras' default ``-dr_ratio``; its ``--dr``
layers are off, as by default); with 1 and with 5 captions per image, with and without
``--sgate``, in float32 and ``mixed_bfloat16``. Also: the demo's shapes (64 regions x 1024,
decoder 128 and 256, 40 images, 40 words), imcap_keras' defaults (64 regions, 9570 words),
``jit_compile=True``, and a step-by-step variant that runs the decoder one word at
a time (``Captioner.step`` in a loop, as a recurrent implementation would).

Prints one JSON object per line: ``workload``, ``dtype``, ``unit`` (captions/s), ``median``,
``min``, ``max``, ``n`` (timed steps), and the shapes; then peak RSS. Run it on an otherwise idle
machine: ``python bench/train_step.py`` (``--quick`` for fewer steps).
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
from imcap.models.captioner import Captioner  # noqa: E402
from imcap.models.config import CaptionerConfig  # noqa: E402


def make_model(vocab_size, regions, channels, dim, use_sentinel, dtype, jit_compile=False):
    vocabulary = ["<start>", "<eos>"] + [f"w{i}" for i in range(vocab_size - 3)]
    config = CaptionerConfig(vocabulary=vocabulary, input_images=False, num_regions=regions,
                             feature_dim=channels, emb_dim=dim, z_dim=dim, lstm_dim=dim,
                             dr_ratio=0.5, dropout_layers=False, use_sentinel=use_sentinel,
                             dtype_policy=dtype)
    model = Captioner(config)
    model.compile(optimizer=keras.optimizers.Adam(5e-4, clipvalue=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def make_batch(images, captions, regions, channels, steps, vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(images, regions, channels)).astype("float32")
    labels = rng.integers(3, vocab_size, size=(images, captions, steps + 1)).astype("int32")
    labels[..., 0] = 1
    weights = np.ones((images, captions, steps), "float32")
    return {"features": features, "words": labels[..., :-1]}, labels[..., 1:], weights


def stepwise_train_function(model):
    """A training step that runs the decoder word by word (teacher forcing, no parallel steps)."""
    optimizer = keras.optimizers.Adam(5e-4, clipvalue=5.0)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train(x, targets, weights):
        features, words = x["features"], x["words"]
        captions = tf.shape(words)[1]
        flat_words = tf.reshape(words, (-1, tf.shape(words)[2]))
        flat_targets = tf.reshape(targets, (-1, tf.shape(targets)[2]))
        flat_weights = tf.reshape(weights, (-1, tf.shape(weights)[2]))
        with tf.GradientTape() as tape:
            encoded = {k: tf.repeat(v, captions, axis=0) for k, v in model.encode(features).items()}
            state = model.initial_state(tf.shape(flat_words)[0])
            loss = 0.0
            for t in range(words.shape[2]):
                log_probs, state, _, _ = model.step(encoded, flat_words[:, t], state)
                picked = tf.gather(log_probs, flat_targets[:, t], batch_dims=1)
                loss -= tf.reduce_sum(picked * flat_weights[:, t])
            loss /= tf.reduce_sum(flat_weights)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return lambda x, y, w: train(x, y, w)


def measure(step, batch, warmup, repeats):
    x, y, w = batch
    for _ in range(warmup):
        step(x, y, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step(x, y, w)
        float(np.asarray(out).reshape(-1)[0])  # wait for the result
        times.append(time.perf_counter() - start)
    return times


def run(name, dtype, images, captions, regions=49, channels=2048, dim=512, vocab_size=9488,
        steps=17, use_sentinel=True, jit_compile=False, stepwise=False, warmup=2, repeats=8):
    model = make_model(vocab_size, regions, channels, dim, use_sentinel, dtype, jit_compile)
    batch = make_batch(images, captions, regions, channels, steps, vocab_size)
    if stepwise:
        step = stepwise_train_function(model)
    else:
        def step(x, y, w):
            return model.train_on_batch(x, y, sample_weight=w)
    times = measure(step, batch, warmup, repeats)
    rates = [images * captions / t for t in times]
    report(name, dtype, "captions/s", rates, images=images, captions_per_image=captions,
           regions=regions, channels=channels, dim=dim, vocab=vocab_size, steps=steps,
           use_sentinel=use_sentinel, jit_compile=jit_compile, stepwise=stepwise,
           median_step_s=round(statistics.median(times), 3))
    keras.backend.clear_session()


def main():
    args, repeats = arguments(__doc__.split("\n")[0], 8)
    workloads = []
    for dtype in ("float32", "mixed_bfloat16"):
        for sgate in (True, False):
            for captions in (1, 5):
                name = f"reference_{'sgate' if sgate else 'spatial'}_{captions}cap"
                workloads.append((name, dict(dtype=dtype, images=32, captions=captions,
                                             use_sentinel=sgate)))
        workloads.append(("imcap_keras_defaults_sgate_1cap",
                          dict(dtype=dtype, images=32, captions=1, regions=64, vocab_size=9570)))
    # the demo's shapes (an 8 x 8 grid of 1024 channels, decoder 128, 40 images, 1 caption, a
    # small vocabulary), and with its decoder before 2026-12-06 (256: where the einsum of
    # per-gate recurrent masks cost 25%, issue 14)
    for dim in (128, 256):
        workloads.append((f"demo_sgate_1cap_dim{dim}", dict(
            dtype="float32", images=40, captions=1, regions=64, channels=1024, dim=dim,
            vocab_size=40, steps=16)))
    workloads.append(("reference_sgate_1cap_jit", dict(dtype="float32", images=32, captions=1,
                                                       jit_compile=True)))
    workloads.append(("reference_sgate_1cap_stepwise", dict(dtype="float32", images=32,
                                                            captions=1, stepwise=True)))
    workloads.append(("reference_sgate_5cap_stepwise", dict(dtype="float32", images=32,
                                                            captions=5, stepwise=True)))
    for name, kwargs in workloads:
        if args.only and args.only not in name:
            continue
        run(name, repeats=repeats, **kwargs)
    summary()


if __name__ == "__main__":
    main()

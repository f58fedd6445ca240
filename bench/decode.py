"""Benchmark: images/s decoding captions from precomputed region features.

Greedy and beam search 3 (``imcap.decoding``), each one compiled loop over a batch, with
random weights and ``<eos>`` suppressed so that every decode runs the full 16 steps; the
image-side projections run inside each timed decode (they are per image). Shapes are the
reference's (self-critical.pytorch AdaAtt): 32 images, 49 regions x 2048 channels, embedding /
hidden / attention 512, 9488 words, sentinel on; float32 and ``mixed_bfloat16``.

Prints one JSON object per line: ``workload``, ``dtype``, ``unit`` (images/s), ``median``,
``min``, ``max``, ``n`` (timed batches), and the shapes; then peak RSS. Run it on an otherwise
idle machine: ``python bench/decode.py`` (``--quick`` for fewer batches).
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
from imcap.decoding import BeamSearchDecoder, GreedyDecoder  # noqa: E402


def make_model(vocab_size, regions, channels, dim, dtype, use_sentinel=True):
    vocabulary = ["<start>", "<eos>"] + [f"w{i}" for i in range(vocab_size - 3)]
    config = CaptionerConfig(vocabulary=vocabulary, input_images=False, num_regions=regions,
                             feature_dim=channels, emb_dim=dim, z_dim=dim, lstm_dim=dim,
                             max_length=18, dr_ratio=0.0, use_sentinel=use_sentinel,
                             dtype_policy=dtype)
    return Captioner(config)


def run(name, dtype, beam_size, images=32, regions=49, channels=2048, dim=512,
        vocab_size=9488, words=16, warmup=2, repeats=10):
    keras.utils.set_random_seed(0)
    model = make_model(vocab_size, regions, channels, dim, dtype)
    features = np.random.default_rng(0).normal(size=(images, regions, channels))
    features = tf.constant(features.astype("float32"))
    max_length = words + 1  # <start> + 16 words
    if beam_size == 1:
        decoder = GreedyDecoder(model, max_length, suppress_eos=True)
    else:
        decoder = BeamSearchDecoder(model, beam_size, max_length, suppress_eos=True)
    for _ in range(warmup):
        out = decoder.decode(features)
    assert (out["words"] != 0).all() and out["words"].shape == (images, words)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder.decode(features)  # returns NumPy: the work is done
        times.append(time.perf_counter() - start)
    rates = [images / t for t in times]
    report(name, dtype, "images/s", rates, images=images, beam_size=beam_size, regions=regions,
           channels=channels, dim=dim, vocab=vocab_size, words=words, sgate=True,
           median_batch_s=round(statistics.median(times), 4))
    keras.backend.clear_session()


def main():
    args, repeats = arguments(__doc__.split("\n")[0], 10)
    for dtype in ("float32", "mixed_bfloat16"):
        for name, beam_size in (("greedy", 1), ("beam3", 3)):
            if args.only and args.only not in name and args.only != dtype:
                continue
            run(name, dtype, beam_size, repeats=repeats)
    summary()


if __name__ == "__main__":
    main()

"""Benchmark: each backbone's region grid and the cost of its forward pass per image.

For every entry of ``imcap.models.backbones.BACKBONES`` and each image size (224 and 256 px):
the default region grid (K regions x D channels) and images/s of the encoder's forward pass,
preprocessing included (``preprocess_images`` then ``build_encoder``'s model, as the feature
cache runs it), compiled with ``tf.function``, random weights (``-cnn_weights none``), float32,
batch 8, after one warm-up batch.

Prints one JSON object per line: ``workload`` (``NAME_SIZEpx``), ``dtype``, ``unit``
(images/s), ``median``, ``min``, ``max``, ``n`` (timed batches), ``cnn``, ``image_size``,
``grid`` ([K, D]), ``seconds_per_image`` (of the median batch), ``batch``; then the CPU
(``cpu_flags``: which of avx2, avx512f, avx512_bf16 it has; the load average before and after)
and peak RSS. Run it on an otherwise idle machine: ``python bench/backbones.py`` (``--quick``
for fewer batches, ``--only resnet`` for the names containing ``resnet``).
"""

import gc
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import imcap  # noqa: E402,F401 -- first: it sets how TensorFlow loads (imcap/__init__.py)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import arguments, report, summary  # noqa: E402
from imcap.models.backbones import BACKBONES  # noqa: E402
from imcap.models.encoder import build_encoder  # noqa: E402
from imcap.models.preprocessing import preprocess_images  # noqa: E402

SIZES = (224, 256)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags():
    """Which of ``FLAGS`` the CPU has (from /proc/cpuinfo), and its model name."""
    flags, model = set(), platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags.update(value.split())
                elif key.strip() == "model name":
                    model = value.strip()
    except OSError:
        pass
    return [flag for flag in FLAGS if flag in flags], model


def run(name, image_size, batch=8, repeats=5):
    """Times the forward pass of ``name``'s encoder on ``batch`` images of ``image_size``."""
    keras.utils.set_random_seed(0)
    encoder = build_encoder(name, None, image_size)
    forward = tf.function(lambda images: encoder(preprocess_images(images, name),
                                                 training=False))
    images = tf.constant(np.random.default_rng(0).integers(
        0, 256, (batch, image_size, image_size, 3)).astype("uint8"))
    forward(images).numpy()  # warm-up: traces and compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(images).numpy()
        times.append(time.perf_counter() - start)
    regions, channels = encoder.output.shape[1:]
    report(f"{name}_{image_size}px", "float32", "images/s", [batch / t for t in times],
           cnn=name, image_size=image_size, grid=[regions, channels],
           seconds_per_image=round(statistics.median(times) / batch, 4), batch=batch)


def main():
    args, repeats = arguments(__doc__.splitlines()[0], repeats=5)
    load_before = os.getloadavg()
    for name in BACKBONES:
        if args.only and args.only not in name:
            continue
        for image_size in SIZES:
            run(name, image_size, repeats=repeats)
            keras.backend.clear_session()  # the networks built so far
            gc.collect()
    flags, model = cpu_flags()
    print(json.dumps({"workload": "cpu", "model": model, "cpu_flags": flags,
                      "load_average_before": [round(x, 2) for x in load_before],
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}))
    summary()


if __name__ == "__main__":
    main()

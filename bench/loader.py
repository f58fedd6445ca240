"""Benchmark: throughput of the tf.data loader (imcap.data.loader) feeding one training epoch.

Generates a synthetic shapes dataset (``--num_images`` train images), preprocesses it at each
``--imsize``, then consumes whole epochs of ``CaptionData.dataset(batch, preprocessor("resnet"), seq_per_img=5)`` inside
the TensorFlow graph (``Dataset.reduce``, as ``model.fit`` does), ``--repeats`` times. Prints one
JSON object per line: ``workload``, ``unit`` (images/s), ``median``, ``min``, ``max``, ``n``.
A model that trains slower than this is not held back by the loader.

``--features``: the same from a features file (``-features``) at the reference shapes (batches
of 32 images, 49 x 2048 float16 regions, 5 captions each), against the rate of the training
step on those shapes (bench/train_step.py's ``reference_sgate_5cap`` model); the target is a
loader at least 3x faster than training.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import imcap  # noqa: E402,F401 -- first: it sets how TensorFlow loads (imcap/__init__.py)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from imcap.data import make_shapes  # noqa: E402
from imcap.utils import prepro_coco  # noqa: E402
from imcap.data.loader import CaptionData  # noqa: E402
from imcap.models.preprocessing import preprocessor  # noqa: E402

RESNET = preprocessor("resnet")  # the encoder's preprocessing, for image datasets


def epoch_rate(data, batch_size, epoch):
    dataset = data.dataset(batch_size, RESNET, seq_per_img=5, epoch=epoch)
    start = time.perf_counter()
    dataset.reduce(tf.constant(0.0), lambda total, batch: total + batch[0]["images"][0, 0, 0, 0])
    return len(data) / (time.perf_counter() - start)


def features_rate(data, batch_size, epoch):
    dataset = data.dataset(batch_size, seq_per_img=5, epoch=epoch)
    start = time.perf_counter()
    dataset.reduce(tf.constant(0.0), lambda total, batch: total + batch[0]["features"][0, 0, 0])
    return len(data) / (time.perf_counter() - start)


def train_rate(batch_size, repeats):
    """Images/s of the training step at the reference shapes, 5 captions per image."""
    import train_step

    model = train_step.make_model(9488, 49, 2048, 512, True, "float32")
    batch = train_step.make_batch(batch_size, 5, 49, 2048, 17, 9488)
    times = train_step.measure(lambda x, y, w: model.train_on_batch(x, y, sample_weight=w),
                               batch, 2, repeats)
    return batch_size / statistics.median(times)


def bench_features(folder, h5, js, args):
    with open(js) as f:
        ids = [image["id"] for image in json.load(f)["images"]]
    path = os.path.join(folder, "features.h5")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", (len(ids), 49, 2048), "float16", chunks=(1, 49, 2048))
        for start in range(0, len(ids), 256):
            stop = min(start + 256, len(ids))
            f["features"][start:stop] = rng.normal(size=(stop - start, 49, 2048))
        f["image_ids"] = np.asarray(ids, np.int64)[::-1]  # any order: matched by id
    data = CaptionData(h5, js, "train", with_images=False, features=path)
    features_rate(data, args.batch_size, 0)  # warm-up
    rates = [features_rate(data, args.batch_size, e + 1) for e in range(args.repeats)]
    training = train_rate(args.batch_size, args.repeats + 2)
    median = statistics.median(rates)
    print(json.dumps({"workload": "loader_features_49x2048_5cap", "unit": "images/s",
                      "median": round(median, 1), "min": round(min(rates), 1),
                      "max": round(max(rates), 1), "n": len(rates),
                      "train_step_images_per_s": round(training, 1),
                      "ratio_to_training": round(median / training, 1),
                      "batch_size": args.batch_size, "num_images": len(data),
                      "cpu_count": os.cpu_count()}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--imsize", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--features", action="store_true",
                        help="from a features file instead of images (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_shapes.generate(os.path.join(folder, "shapes"), num_train=args.num_images,
                             num_restval=0, num_val=10, num_test=10, image_size=256)
        if args.features:
            h5, js = (os.path.join(folder, f"labels.{ext}") for ext in ("h5", "json"))
            with contextlib.redirect_stdout(io.StringIO()):
                prepro_coco.main(prepro_coco.parse_params([
                    "--coco_path", os.path.join(folder, "shapes"), "--num_val", "10",
                    "--num_test", "10", "--no_images", "--output_h5", h5,
                    "--output_json", js]))
            bench_features(folder, h5, js, args)
            return
        for size in args.imsize:
            h5, js = (os.path.join(folder, f"d{size}.{ext}") for ext in ("h5", "json"))
            with contextlib.redirect_stdout(io.StringIO()):
                prepro_coco.main(prepro_coco.parse_params([
                    "--coco_path", os.path.join(folder, "shapes"), "--num_val", "10",
                    "--num_test", "10", "--imsize", str(size), "--output_h5", h5,
                    "--output_json", js]))
            data = CaptionData(h5, js, "train")
            epoch_rate(data, args.batch_size, 0)  # warm-up: graph tracing, file cache
            rates = [epoch_rate(data, args.batch_size, e + 1) for e in range(args.repeats)]
            print(json.dumps({"workload": f"loader_train_epoch_{size}px", "unit": "images/s",
                              "median": round(statistics.median(rates), 1),
                              "min": round(min(rates), 1), "max": round(max(rates), 1),
                              "n": len(rates), "batch_size": args.batch_size, "seq_per_img": 5,
                              "num_images": len(data), "cpu_count": os.cpu_count()}),
                  flush=True)


if __name__ == "__main__":
    main()

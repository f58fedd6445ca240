"""Measurement: can a linear classifier tell the shapes apart from the encoder's features?

For every object of the synthetic set, takes the encoder's grid cell under the object's centre
(standardised per position and channel with the training images' statistics) and fits a linear
softmax classifier (circle, square, triangle) on ``--train_images`` training images; prints, as
JSON, its accuracy on the test split's objects, overall and by object size. It shows whether the
CNN (random weights in the demo) still sees a shape well enough for the decoder to name it.

    python bench/feature_probe.py --shapes demo/shapes --data demo/run/data/shapes \\
        [--cnn_layer conv4_block6_out] [--cnn_weights none]

``--data`` is prepro_coco.py's output without extension (the ``.json`` and ``.h5``), as the demo
writes it; ``--shapes`` is make_shapes' folder (for the boxes).
"""

import argparse
import json
import os

import h5py
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import imcap  # noqa: E402,F401 -- first: it sets how TensorFlow loads (imcap/__init__.py)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from imcap.evaluation.grounding import load_objects  # noqa: E402
from imcap.models.encoder import build_encoder  # noqa: E402
from imcap.models.preprocessing import preprocess_images  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", required=True, help="make_shapes' output folder")
    parser.add_argument("--data", required=True, help="prepro_coco.py output, no extension")
    parser.add_argument("--cnn_layer", default="conv4_block6_out")
    parser.add_argument("--cnn_weights", default="none")
    parser.add_argument("--train_images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()

    with open(args.data + ".json") as f:
        images = json.load(f)["images"]
    splits = [image["split"] for image in images]
    rows = sorted([i for i, s in enumerate(splits) if s == "train"][:args.train_images]
                  + [i for i, s in enumerate(splits) if s == "test"])
    with h5py.File(args.data + ".h5", "r") as f:
        pixels = f["images"][rows]
    size = pixels.shape[-1]
    keras.utils.set_random_seed(args.seed)
    encoder = build_encoder("resnet", args.cnn_weights, size, args.cnn_layer)
    run = tf.function(lambda x: encoder(preprocess_images(x, "resnet"), training=False))
    features = np.concatenate([np.asarray(run(pixels[i:i + 64].transpose(0, 2, 3, 1)))
                               for i in range(0, len(rows), 64)])
    grid = int(round(features.shape[1] ** 0.5))
    train = np.array([splits[r] == "train" for r in rows])
    features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-3)

    shapes = ("circle", "square", "triangle")
    objects = {}
    for part in ("train", "val"):
        objects.update(load_objects(os.path.join(args.shapes, "annotations",
                                                 f"instances_{part}2014.json"))[0])
    x, y, test, small = [], [], [], []
    for k, row in enumerate(rows):
        for ann in objects[images[row]["id"]]:
            x0, y0, x1, y1 = ann["box"]
            col = min(int((x0 + x1) / 2 / size * grid), grid - 1)
            cell_row = min(int((y0 + y1) / 2 / size * grid), grid - 1)
            x.append(features[k, cell_row * grid + col])
            y.append(shapes.index(ann["shape"]))
            test.append(not train[k])
            small.append(ann["size"] == "small")
    x, y, test, small = map(np.array, (x, y, test, small))
    probe = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(
        len(shapes), activation="softmax", kernel_regularizer=keras.regularizers.l2(1e-3))])
    probe.compile("adam", "sparse_categorical_crossentropy")
    probe.fit(x[~test], y[~test], epochs=30, batch_size=64, verbose=0)
    correct = probe.predict(x, verbose=0).argmax(-1) == y

    def accuracy(mask):
        return round(float(correct[mask].mean()), 3)

    print(json.dumps({"workload": "shape_probe", "cnn_layer": args.cnn_layer,
                      "cnn_weights": args.cnn_weights, "image_size": int(size), "grid": grid,
                      "train_objects": int((~test).sum()), "test_objects": int(test.sum()),
                      "train_accuracy": accuracy(~test), "test_accuracy": accuracy(test),
                      "test_small": accuracy(test & small), "test_large": accuracy(test & ~small),
                      "chance": round(float(np.bincount(y[test]).max() / test.sum()), 3)}))


if __name__ == "__main__":
    main()

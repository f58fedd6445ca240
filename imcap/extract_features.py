"""Extract region features once, for training and captioning with ``-features PATH``:
``imcap-features`` or ``python -m imcap.extract_features``.

Reads the images of prepro_coco.py's HDF5 (``-h5``, its JSON beside it or ``-json``), or the
image files of a folder (``-images DIR``; each image's id is the number its file name ends with,
as in COCO's ``COCO_val2014_000000391895.jpg`` and Flickr's ``1000092795.jpg``, or, with
``-json``, the ``id`` of the JSON entry whose ``file_path`` ends with the file's name), runs the
CNN (``-cnn``, ``-cnn_weights``, ``-cnn_layer``, ``-imsize``, as train.py) and writes a features
file (``imcap.data.region_features``) to ``-out``: under a temporary name until complete, and
resumed after its last complete batch when interrupted.
"""

import os
import re
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from imcap.models.config import CNN_NAMES  # noqa: E402  (no TensorFlow: --help stays fast)
from imcap.utils.cli import ArgumentParser, one_line_errors  # noqa: E402
from imcap.utils.fileio import DataError, load_json  # noqa: E402


def get_parser():
    parser = ArgumentParser(prog="imcap-features", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-h5", help="prepro_coco.py's HDF5 (its images)")
    source.add_argument("-images", help="a folder of image files")
    parser.add_argument("-json", help="prepro_coco.py's JSON: the image ids (default: beside "
                                      "-h5, with .json)")
    parser.add_argument("-out", required=True, help="the features file to write (.h5)")
    parser.add_argument("-cnn", default="resnet", choices=CNN_NAMES, help="CNN encoder")
    parser.add_argument("-cnn_weights", default="imagenet",
                        help="'imagenet', 'none' (random) or a local weights file")
    parser.add_argument("-cnn_layer", default=None,
                        help="the layer whose grid gives the regions (default: the backbone's)")
    parser.add_argument("-imsize", type=int, default=256,
                        help="image size (-images: each image is resized to it; -h5: must be "
                             "the HDF5's)")
    parser.add_argument("-bs", type=int, default=32, help="images per batch")
    return parser


def folder_ids(paths, json_path=None):
    """The image id of each file: from ``json_path``'s ``file_path`` entries, or the number
    its name ends with."""
    if json_path:
        info = load_json(json_path, "vocabulary json")
        by_name = {os.path.basename(str(image.get("file_path", ""))): image.get("id")
                   for image in info.get("images", []) if isinstance(image, dict)}
        ids = [by_name.get(os.path.basename(path)) for path in paths]
        missing = next((p for p, i in zip(paths, ids) if not isinstance(i, int)), None)
        if missing:
            raise DataError(f"vocabulary json {json_path}: no image with an 'id' has the "
                            f"file name {os.path.basename(missing)}")
        return ids
    ids = []
    for path in paths:
        match = re.search(r"(\d+)$", os.path.splitext(os.path.basename(path))[0])
        if not match:
            raise DataError(f"image {path}: its file name ends with no number to use as its "
                            f"image id; pass -json (prepro_coco.py's) to take the ids from there")
        ids.append(int(match.group(1)))
    if len(set(ids)) != len(ids):
        raise DataError(f"folder {os.path.dirname(paths[0])}: two files give the same image id")
    return ids


class FolderImages:
    """Image files as (B, S, S, 3) uint8 RGB batches (errors name the file)."""

    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def read(self, start, stop):
        from imcap.data.images import load_images
        return load_images(self.paths[start:stop], self.size)


def run(args):
    from imcap.utils.quiet import start_tensorflow
    start_tensorflow()
    import numpy as np
    from imcap.data.images import folder_images
    from imcap.data import features
    from imcap.models.encoder import build_encoder

    if args.bs < 1:
        raise ValueError(f"-bs must be at least 1, got {args.bs}")
    if args.images:
        paths = folder_images(args.images)
        images, ids = FolderImages(paths, args.imsize), folder_ids(paths, args.json)
    else:
        json_path = args.json or os.path.splitext(args.h5)[0] + ".json"
        if not os.path.isfile(args.h5):
            raise DataError(f"HDF5 file not found: {args.h5}")
        images = features.HDF5Images(args.h5)
        if images.images.shape[2] != args.imsize:
            raise DataError(f"HDF5 file {args.h5}: its images are {images.images.shape[2]} px "
                            f"but -imsize is {args.imsize}")
        ids = features.json_image_ids(json_path, len(images))
    try:
        encoder = build_encoder(args.cnn, args.cnn_weights, args.imsize, args.cnn_layer)
        features.write_features(encoder, args.cnn, images, np.asarray(ids), args.out, args.bs,
                                what="features file")
    finally:
        getattr(images, "close", lambda: None)()
    regions, dim = encoder.output.shape[1:]
    print(f"{len(ids)} images x {regions} regions x {dim} channels: {args.out}")
    return args.out


def main(argv=None):
    args = get_parser().parse_args(argv)
    with one_line_errors("imcap-features"):
        return run(args)


def cli():
    main()


if __name__ == "__main__":
    cli()

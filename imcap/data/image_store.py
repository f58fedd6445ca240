"""The images of prepro_coco.py: streamed into the HDF5 (``write_images``), and the bad ones
(missing or unreadable) refused, or with ``--skip_bad_images`` dropped and listed."""

import os
import sys

import numpy as np
from tqdm import tqdm

from imcap.data import coco_gt, images
from imcap.utils.fileio import DataError


def check_image_files(records, images_root, skip_bad):
    """Fails fast (before any decoding) on a missing image file; with ``skip_bad``, returns
    ``{index: reason}`` of the missing ones instead."""
    missing = {}
    for i, record in enumerate(records):
        path = os.path.join(images_root, record["file_path"])
        if not os.path.isfile(path):
            if not skip_bad:
                raise DataError(f"image {i} ({record['file_path']}): file not found: {path}")
            missing[i] = "file not found"
    return missing


def write_images(h5_file, records, params):
    """Streams every image into ``images`` (N, 3, S, S) uint8, in the order of ``records``.

    An unreadable image stops the run, or with ``--skip_bad_images`` is left out; returns
    ``{index: reason}`` of those left out.
    """
    size = params["imsize"]
    paths = [os.path.join(params["images_root"], r["file_path"]) for r in records]
    dataset = h5_file.create_dataset("images", (len(paths), 3, size, size), dtype="uint8",
                                     maxshape=(None, 3, size, size), chunks=(1, 3, size, size))
    bad, written = {}, 0
    with tqdm(total=len(paths), desc="images", unit="img", file=sys.stderr) as progress:
        for start, block, errors in images.read_images(paths, size, params["workers"],
                                                       draft_ratio=params["jpeg_draft_ratio"]):
            for j, message in errors.items():
                index = start + j
                if not params["skip_bad_images"]:
                    raise DataError(f"image {index} ({records[index]['file_path']}): {message}")
                # the list names the file already: keep what follows its path
                bad[index] = message.split(f"{paths[index]}: ", 1)[-1]
            if errors:
                block = np.delete(block, list(errors), axis=0)
            dataset[written:written + len(block)] = block
            written += len(block)
            progress.update(len(block) + len(errors))
    dataset.resize(written, axis=0)
    return bad


def drop_images(records, bad, dropped):
    """Returns ``records`` without those at the indices of ``bad`` (``{index: reason}``), and
    adds ``(file_path, reason)`` of each to ``dropped``."""
    dropped += [(records[i]["file_path"], reason) for i, reason in bad.items()]
    return [r for i, r in enumerate(records) if i not in bad]


def count_bad(dropped):
    """'N unreadable or missing images', for messages."""
    return f"{len(dropped)} unreadable or missing image" + ("" if len(dropped) == 1 else "s")


def check_dropped(records, dropped, total, given, params):
    """Stops with one line when dropping bad images leaves no image, leaves the random split
    short of the ``--num_val`` + ``--num_test`` images (and one train image) that the input had
    room for, or empties a given val or test split. ``total``: the number of images before any
    was dropped; ``given``: the number of images of each given split then (None: random split).
    """
    if not dropped:
        return
    file_path, reason = min(dropped)
    one = len(dropped) == 1
    which = (f"{count_bad(dropped)} {'was' if one else 'were'} dropped "
             f"({'' if one else 'the first, '}{file_path}: {reason})")
    if not records:
        raise DataError(f"no image is left: {which}")
    if given is None:
        need = params["num_val"] + params["num_test"] + 1
        if len(records) < need <= total:
            raise DataError(f"{len(records)} of {total} images remain, too few for --num_val "
                            f"{params['num_val']} + --num_test {params['num_test']} and one "
                            f"train image: {which}")
        return
    for split in coco_gt.GT_SPLITS:
        if given[split] and not any(r["split"] == split for r in records):
            raise DataError(f"the {split} split is empty: all its {given[split]} images are gone, "
                            f"{which}")


def dropped_list_path(output_json):
    """The list of the images ``--skip_bad_images`` dropped, written next to ``output_json``."""
    root, _ = os.path.splitext(output_json)
    return f"{root}_dropped.txt"


def write_dropped_list(path, dropped):
    """Writes one ``file_path<TAB>reason`` line per dropped image, sorted by path, and syncs."""
    with open(path, "w", encoding="utf-8") as f:  # prepro_coco.py's atomic_output name
        for file_path, reason in sorted(dropped):
            reason = " ".join(reason.split())  # one line, no tab
            f.write(f"{file_path}\t{reason}\n")
        f.flush()
        os.fsync(f.fileno())

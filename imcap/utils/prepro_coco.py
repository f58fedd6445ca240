"""Preprocess a captioning dataset into the NeuralTalk2 JSON + HDF5 that imcap trains on.

Usage (from ``imcap/utils``, as imcap_keras documents it; or ``python -m imcap.utils.prepro_coco``,
or ``imcap-prepro``)::

    python prepro_coco.py --input_json coco_raw.json --output_json OUT.json \\
        --output_h5 OUT.h5 --images_root COCO_IMAGES
    python prepro_coco.py --coco_path COCO --output_json OUT.json --output_h5 OUT.h5
    python prepro_coco.py --karpathy_json dataset_coco.json --images_root COCO/images ...

Input, one of:

* ``--input_json``: NeuralTalk2's raw list ``[{"file_path": "val2014/x.jpg",
  "captions": ["A man ...", ...], "id": 391895}, ...]``, ``file_path`` relative to
  ``--images_root``;
* ``--coco_path DIR``: ``DIR/annotations/captions_{train,val}2014.json`` and
  ``DIR/images/{train,val}2014/`` (``--year`` changes 2014);
* ``--karpathy_json``: Karpathy's ``dataset_coco.json`` / ``dataset_flickr8k.json`` /
  ``dataset_flickr30k.json`` (``{"images": [{"filepath"?, "filename", "split",
  "sentences": [{"raw"}], "cocoid" or "imgid"}]}``), splits included.

Splits: imcap_keras' random split (after ``random.seed(123); random.shuffle``, the first
``--num_val`` images are val, the next ``--num_test`` test, the rest train), Karpathy's from its
JSON, or ``--splits_dir`` holding ``coco_{train,restval,val,test}.txt`` file-name lists.
``restval`` joins train unless ``--keep_restval``.

Output:

* ``--output_h5``: ``labels`` (M, max_length) uint32, word ids zero-padded;
  ``label_start_ix``, ``label_end_ix`` (N,) uint32, 1-based inclusive pointers into ``labels``
  for each image; ``label_length`` (M,) uint32 words per caption, markers included;
  ``images`` (N, 3, S, S) uint8 RGB (not with ``--no_images``);
* ``--output_json``: ``{"ix_to_word": {"1": "<start>", ...}, "images": [{"split",
  "file_path", "id"}, ...]}`` in the order of the HDF5;
* ``<output_json minus .json>_{val,test}_gt.json``: COCO-format ground-truth captions of val and
  test (raw captions), which eval_caps scores against.
* ``<output_json minus .json>_dropped.txt``, with ``--skip_bad_images`` and only when an image
  was dropped: ``file_path<TAB>reason``, a line per image left out. Bad images are dropped before
  the random split is drawn, so it still gets ``--num_val`` and ``--num_test`` images (or the run
  stops, when too few remain for them and one train image); a given split keeps each image's split
  (and the run stops when its val or test images are all gone).

Text processing is exactly imcap_keras' (see ``imcap.data.vocabulary``): with imcap_keras'
defaults the labels, pointers, lengths, vocabulary and image list equal what its script writes
under Python 3. Every output is written under ``<name>.partial`` and renamed when complete.
"""

import contextlib
import os
import random
import sys

if __name__ == "__main__" and not __package__:
    # run as a script from imcap/utils: import the package, not this folder's modules
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import h5py

from imcap.data import coco_gt, images, sources, vocabulary as vocab
from imcap.data.image_store import (
    check_dropped, check_image_files, count_bad, drop_images, dropped_list_path,
    write_dropped_list, write_images)
from imcap.utils import fileio
from imcap.utils.cli import ArgumentParser, one_line_errors
from imcap.utils.fileio import DataError

def load_records(params):
    """Reads the chosen input and assigns Karpathy or split-list splits (random splits come later)."""
    if params["coco_path"]:
        records = sources.load_coco(params["coco_path"], params["year"])
    elif params["karpathy_json"]:
        records = sources.load_karpathy(params["karpathy_json"])
    else:
        records = sources.load_raw_json(params["input_json"])
    if params["splits_dir"]:
        records, unlisted = sources.apply_split_lists(records, params["splits_dir"])
        if unlisted:
            print(f"left out {unlisted} images named in no split list of {params['splits_dir']}")
    if not records:
        raise DataError("the input holds no images")
    return records


def process_text(records, params, random_split):
    """Tokenizes, builds the vocabulary, assigns the random split if ``random_split``, and
    encodes captions.

    Returns ``(vocabulary list, labels, label_start_ix, label_end_ix, label_length)``.
    """
    threshold = params["word_count_threshold"]
    tokens = [[vocab.tokenize(c) for c in r["captions"]] for r in records]
    print("example processed tokens:")
    for image_tokens in tokens[:10]:
        print(image_tokens[0])
    train_only = params.get("vocab_from", "all") == "train"
    if random_split and train_only:  # the vocabulary needs the splits first
        print("assigned %d to val, %d to test." % sources.assign_random_splits(
            records, params["num_val"], params["num_test"]))
    # imcap_keras (and NeuralTalk2) counts the captions of every split; --vocab_from train, the
    # training images' (train and restval) only
    flat = [t for record, image_tokens in zip(records, tokens) for t in image_tokens
            if not train_only or record["split"] in ("train", "restval")]
    counts = vocab.count_words(flat)
    print("\n".join(vocab.vocab_report(counts, threshold, flat)))
    words = vocab.build_vocab(counts, threshold)
    if train_only and words[-1] != vocab.UNK and any(
            w not in counts for image_tokens in tokens for t in image_tokens for w in t):
        words.append(vocab.UNK)  # for the val / test words no training caption has
    if words[-1] == vocab.UNK:
        print("inserting the special UNK token")
    if random_split and not train_only:
        print("assigned %d to val, %d to test." % sources.assign_random_splits(
            records, params["num_val"], params["num_test"]))
    split_sizes = {s: sum(r["split"] == s for r in records) for s in sources.SPLITS}
    print("split sizes: " + ", ".join(f"{s} {n}" for s, n in split_sizes.items() if n))
    if not split_sizes["train"]:
        print("warning: the train split is empty (--num_val and --num_test cover every image)")
    final = [[vocab.apply_unk(t, counts, threshold) for t in image_tokens]
             for image_tokens in tokens]
    word_to_ix = {w: i + 1 for i, w in enumerate(words)}
    arrays = vocab.encode_captions(final, word_to_ix, params["max_length"])
    print("encoded captions to array of size ", repr(arrays[0].shape))
    return (words,) + arrays


def write_labels(h5_file, labels, label_start_ix, label_end_ix, label_length):
    h5_file.create_dataset("labels", dtype="uint32", data=labels)
    h5_file.create_dataset("label_start_ix", dtype="uint32", data=label_start_ix)
    h5_file.create_dataset("label_end_ix", dtype="uint32", data=label_end_ix)
    h5_file.create_dataset("label_length", dtype="uint32", data=label_length)


def output_json(words, records):
    """imcap_keras' output JSON: 1-based vocabulary and the image list in HDF5 order."""
    images_out = []
    for record in records:
        entry = {"split": record["split"], "file_path": record["file_path"]}
        if record["id"] is not None:
            entry["id"] = record["id"]
        images_out.append(entry)
    return {"ix_to_word": {i + 1: w for i, w in enumerate(words)}, "images": images_out}


def main(params):
    """Runs the preprocessing; returns the paths written."""
    records = load_records(params)
    random.seed(123)  # imcap_keras' shuffle, for identical output
    random.shuffle(records)
    random_split, given = records[0]["split"] is None, None
    if not random_split:
        sources.merge_restval(records, params["keep_restval"])
        given = {s: sum(r["split"] == s for r in records) for s in sources.SPLITS}

    for path in (params["output_h5"], params["output_json"]):
        fileio.prepare_output(path)
    # bad images go before the splits are drawn: missing files now, unreadable ones as they are
    # decoded (the split, the vocabulary and the labels are then computed again without them)
    total, dropped = len(records), []
    if not params["no_images"]:
        missing = check_image_files(records, params["images_root"], params["skip_bad_images"])
        records = drop_images(records, missing, dropped)
        check_dropped(records, dropped, total, given, params)
    text = process_text(records, params, random_split)
    if not params["no_images"]:
        fileio.check_space(params["output_h5"], len(records) * 3 * params["imsize"] ** 2,
                           f"the HDF5 of {len(records)} images")
    dropped_list = dropped_list_path(params["output_json"])
    outputs = [params["output_h5"], params["output_json"]]
    # every output is all or nothing; the JSON is committed last (its block is entered first):
    # a JSON in place means the whole run finished
    with contextlib.ExitStack() as stack:
        def output(path):
            return stack.enter_context(fileio.atomic_output(path))

        json_partial, h5_partial = output(params["output_json"]), output(params["output_h5"])
        with h5py.File(h5_partial, "w") as h5_file:
            if not params["no_images"]:
                unreadable = write_images(h5_file, records, params)
                records = drop_images(records, unreadable, dropped)
                check_dropped(records, dropped, total, given, params)
                if dropped:
                    redo = "vocabulary and split" if random_split else "vocabulary"
                    print(f"dropped {count_bad(dropped)}, listed in {dropped_list}"
                          + (f"; computing the {redo} again without them" if unreadable else ""))
                if unreadable:
                    text = process_text(records, params, random_split)
            write_labels(h5_file, *text[1:])
        fileio.write_json(json_partial, output_json(text[0], records))
        if all(r["id"] is not None for r in records):
            for split in coco_gt.GT_SPLITS:
                if any(r["split"] == split for r in records):
                    outputs.append(coco_gt.gt_path(params["output_json"], split))
                    gt = coco_gt.build_gt(records, split, params["source"])
                    fileio.write_json(output(outputs[-1]), gt)
        else:
            print("images have no 'id': no ground-truth caption files written")
        if dropped:
            outputs.append(dropped_list)
            write_dropped_list(output(dropped_list), dropped)
        elif os.path.isfile(dropped_list):
            os.remove(dropped_list)  # an earlier run's list: no image of this run was dropped
    for path in outputs:
        print("wrote ", path)
    return outputs


def get_parser():
    parser = ArgumentParser(prog="prepro_coco.py", 
        description="Preprocess captions and images into NeuralTalk2 JSON + HDF5 for imcap.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input_json", default="./coco_raw.json",
                        help="NeuralTalk2 raw json [{file_path, captions, id}] "
                             "(imcap_keras' input)")
    source.add_argument("--coco_path", default=None,
                        help="MS COCO folder with annotations/captions_{train,val}YEAR.json and "
                             "images/{train,val}YEAR")
    source.add_argument("--karpathy_json", default=None,
                        help="Karpathy's dataset_coco.json / dataset_flickr8k.json / "
                             "dataset_flickr30k.json, splits included")
    parser.add_argument("--year", default="2014", help="COCO year of --coco_path")
    parser.add_argument("--splits_dir", default=None,
                        help="folder with coco_{train,restval,val,test}.txt file-name lists")
    parser.add_argument("--vocab_from", default="all", choices=["all", "train"],
                        help="count the words of every split's captions (as imcap_keras "
                             "and NeuralTalk2 do) or of the training images' only (val/test words "
                             "unseen in training become UNK)")
    parser.add_argument("--keep_restval", action="store_true",
                        help="keep Karpathy's restval as its own split (default: it joins train)")
    parser.add_argument("--num_val", default=None, type=int,
                        help="random split: number of validation images (default 2000)")
    parser.add_argument("--num_test", default=None, type=int,
                        help="random split: number of test images (default 2000)")
    parser.add_argument("--output_json", default="cocotalk_challenge.json", help="output json file")
    parser.add_argument("--output_h5", default="cocotalk_challenge.h5", help="output h5 file")
    parser.add_argument("--max_length", default=18, type=int,
                        help="max words per caption, <start> and <eos> included; longer ones are "
                             "clipped")
    parser.add_argument("--images_root", default=None,
                        help="folder the file paths are relative to (default with --coco_path: "
                             "COCO/images)")
    parser.add_argument("--word_count_threshold", default=5, type=int,
                        help="only words that occur more than this number of times are kept")
    parser.add_argument("--imsize", default=256, type=int, help="side of the stored square images")
    parser.add_argument("--workers", default=os.cpu_count(), type=int,
                        help="processes decoding images (default: all cores)")
    parser.add_argument("--jpeg_draft_ratio", default=images.DRAFT_RATIO, type=float,
                        help="decode JPEGs at a reduced DCT scale while every side keeps at least "
                             "this fraction of --imsize (1: never below --imsize; default "
                             "%(default)s: about 2x faster on COCO's 640x480 photos)")
    parser.add_argument("--no_images", action="store_true",
                        help="labels only, no images dataset (for precomputed features)")
    parser.add_argument("--skip_bad_images", action="store_true",
                        help="drop unreadable or missing images before the splits are drawn, "
                             "and list them in OUT_dropped.txt beside --output_json, instead "
                             "of stopping")
    return parser


def parse_params(argv=None):
    """Parses and checks the command line; errors exit with argparse's usage message."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.splits_dir and args.karpathy_json:
        parser.error("--splits_dir cannot be combined with --karpathy_json (it has its own splits)")
    given_splits = "--splits_dir" if args.splits_dir else "--karpathy_json" if \
        args.karpathy_json else None
    for name in ("num_val", "num_test"):
        if getattr(args, name) is None:
            setattr(args, name, 2000)
        elif given_splits:
            parser.error(f"--{name} sets the random split; {given_splits} already gives the splits")
    for name, low in (("num_val", 0), ("num_test", 0), ("word_count_threshold", 0),
                      ("max_length", 2), ("imsize", 1), ("workers", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}, got {getattr(args, name)}")
    if not 0 < args.jpeg_draft_ratio <= 1:
        parser.error(f"--jpeg_draft_ratio must be in (0, 1], got {args.jpeg_draft_ratio}")
    if args.images_root is None:
        if args.coco_path:
            args.images_root = os.path.join(args.coco_path, "images")
        elif not args.no_images:
            parser.error("--images_root is required (the folder that file paths are relative to)")
    params = vars(args)
    params["source"] = args.coco_path or args.karpathy_json or args.input_json
    return params


def cli(argv=None):
    """Console entry point: one-line error and exit status 1 on bad input."""
    params = parse_params(argv)
    with one_line_errors("prepro_coco"):
        main(params)


if __name__ == "__main__":
    cli()

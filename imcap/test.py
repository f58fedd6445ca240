"""Caption every image of a split with a trained model, as imcap_keras documents it:
``python test.py`` (from ``imcap/``), ``python -m imcap.test`` or ``imcap-test``.

Loads ``-model_file`` (default: ``DATA_FOLDER/models/MODEL_best.keras``, or
``MODEL_cnntrain_best.keras`` with ``--cnntrain``, ``MODEL_scst_best.keras`` with ``--scst``),
rebuilt from the config inside the checkpoint, and decodes ``-split`` (default test) of the preprocessed data in batches of
``-bs`` images: greedy, beam search with ``-bsize K`` (``-length_penalty``), or sampling with
``-temperature T``; at most ``-seqlen`` words with ``<start>`` and ``<eos>``. With ``-features
PATH`` it reads the split's precomputed region features instead of its images (a features file
or folder, ``imcap.data.region_features``). Writes a COCO result
JSON ``[{"image_id", "caption"}]`` (atomically) under ``results/``, and prints captions/s and
the command that scores it.
"""

import logging
import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from imcap import args as imcap_args  # noqa: E402  (no TensorFlow: --help stays fast)
from imcap.utils.cli import one_line_errors  # noqa: E402
from imcap.data.coco_gt import gt_path  # noqa: E402
from imcap.utils.fileio import (  # noqa: E402
    DataError, prepare_output, write_json_atomic)


def run_folder(args):
    from imcap.training.run_folder import RunFolder
    return RunFolder(args.data_folder, args.model_name)


def checkpoint_path(args):
    """``-model_file``, or the best checkpoint of stage 1 (stage 2 with --cnntrain, the
    self-critical stage with --scst)."""
    if args.model_file:
        return args.model_file
    stage = "scst" if args.scst else "finetune" if args.cnn_train else "frozen"
    return run_folder(args).best(stage)


def method_name(args):
    if args.temperature > 0:
        return f"sample{args.temperature:g}"
    return f"beam{args.bsize}" if args.bsize > 1 else "greedy"


def make_decoder(model, args, from_features=False):
    """The decoder the flags ask for (-temperature, -bsize, -seqlen, -length_penalty)."""
    from imcap import decoding
    return decoding.make_decoder(model, args.bsize, args.temperature, args.seqlen,
                                 args.length_penalty, args.seed, from_features,
                                 ban_unk=args.ban_unk,
                                 remove_bad_endings=args.remove_bad_endings,
                                 block_trigrams=args.block_trigrams)


def split_data(model, args, h5_path, json_path):
    """The split to caption: its images, or with ``-features`` its precomputed features,
    padded to the checkpoint's regions."""
    from imcap.data.loader import CaptionData
    config = model.config
    if not args.features and model.encoder is None:
        raise DataError(f"checkpoint {checkpoint_path(args)} takes precomputed features "
                        f"({config.num_regions} x {config.feature_dim}), not the images of "
                        f"{h5_path}; pass -features PATH")
    return CaptionData.for_model(h5_path, json_path, args.split, config, args.features)


def run(args):
    from imcap.models import saving
    from imcap.evaluation.attention_file import write_attention
    from imcap.evaluation.captioning import caption_split
    run = run_folder(args)
    json_path, h5_path = run.data_file(args.json_file), run.data_file(args.h5file)
    path = checkpoint_path(args)
    model = saving.load_model(path, compile=False)
    data = split_data(model, args, h5_path, json_path)
    if not len(data):
        raise DataError(f"{json_path}: the {args.split} split has no images")
    saving.check_data_matches(model, data, path)
    results_file = args.results_file or run.result(path, args.split, method_name(args))
    prepare_output(results_file)  # fail before the work if it cannot be written
    decoder = make_decoder(model, args, from_features=bool(args.features))
    results, attention, seconds = caption_split(decoder, data, args.bs, args.save_attention)
    write_json_atomic(results_file, results)
    logging.getLogger("imcap.test").info("wrote %s", results_file)
    print(f"{len(results)} captions in {seconds:.1f} s ({len(results) / seconds:.1f} "
          f"captions/s, {method_name(args)}, batches of {args.bs})")
    print(f"results: {results_file}")
    if attention is not None:
        attention_file = os.path.splitext(results_file)[0] + "_attention.h5"
        write_attention(attention_file, attention, model.config.vocabulary)
        print(f"attention: {attention_file}")
    ground_truth = gt_path(json_path, args.split)
    if os.path.exists(ground_truth):
        print(f"score it: python -m imcap.coco_caption.eval_caps -results_file {results_file} "
              f"-ann_file {ground_truth}")
    return results_file


def main(argv=None):
    args = imcap_args.parse_args(argv, "test.py")
    from imcap.utils.quiet import start_tensorflow
    start_tensorflow()
    with one_line_errors("test"):
        return run(args)


def cli():
    """The console script: main() without its return value (which would be the exit status)."""
    main()


if __name__ == "__main__":
    cli()

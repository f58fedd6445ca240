"""Caption your own images with a trained model:

    python -m imcap.caption IMG [IMG ...] -model_file MODEL.keras [--att_dir DIR]

(or ``imcap-caption``). Each IMG is an image file, a folder (its image files, by extension, in
name order; not recursive) or a glob such as ``'photos/*.jpg'`` (expanded here too, for shells
that do not). Prints ``path<TAB>caption`` per image. JPEG, PNG, GIF, ... of any size
and mode (grayscale, RGBA, palette, 16-bit, CMYK) are read as prepro_coco.py reads them: RGB,
resized to the model's image size. ``-bsize K`` uses beam search, ``-temperature T`` samples.
With ``--att_dir``, writes per image ``NAME_attention.png`` (the attention map of every word
over the image, smoothed with ``-sig``, cut at ``-th``, and the sentinel's 1 - beta per word)
and ``captions.json`` with the words and their beta. Runs on CPU.
"""

import glob
import os

# no TensorFlow at import: --help stays fast (main loads it after the flags parse)
from imcap.utils.cli import (
    ArgumentParser, add_decoding_options, decoding_options, one_line_errors)
from imcap.utils.fileio import DataError, write_json_atomic
from imcap.data.images import folder_images, load_images


def get_parser():
    parser = ArgumentParser(prog="caption.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="image files, folders (their image files, not recursive) or globs "
                             "('photos/*.jpg')")
    parser.add_argument("-model_file", "--model_file", required=True,
                        help="a checkpoint train.py wrote (e.g. models/model_best.keras)")
    parser.add_argument("-bsize", "--bsize", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("-temperature", "--temperature", type=float, default=-1.0,
                        help="sample at this temperature (<= 0: no sampling)")
    parser.add_argument("-seqlen", "--seqlen", type=int, default=None,
                        help="maximum caption length with <start> and <eos> (default: the "
                             "model's)")
    add_decoding_options(parser)
    parser.add_argument("-bs", "--bs", type=int, default=16, help="images per batch")
    parser.add_argument("--att_dir", default=None,
                        help="write attention figures and captions.json here")
    parser.add_argument("-sig", "--sig", type=float, default=0.5,
                        help="Gaussian smoothing of the attention maps, in grid cells")
    parser.add_argument("-th", "--th", type=float, default=0.0,
                        help="hide attention below this fraction of each map's maximum")
    return parser


def check_args(args):
    for name, value, low in (("-bsize", args.bsize, 1), ("-bs", args.bs, 1)):
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.seqlen is not None and args.seqlen < 2:
        raise ValueError(f"-seqlen must be at least 2, got {args.seqlen}")
    if args.sig < 0 or not 0 <= args.th < 1:
        raise ValueError(f"-sig must be >= 0 and -th in [0, 1), got {args.sig} and {args.th}")


def expand_images(specs):
    """Image files, folders and globs -> image paths, in the order given (see the docstring).

    A glob keeps the files it matches (not folders). A path that does not exist and is no glob
    is kept: reading it names the missing file.

    Raises:
        DataError: a folder without image files, or a glob that matches nothing.
    """
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            paths.extend(folder_images(spec))
        elif not os.path.exists(spec) and any(c in spec for c in "*?["):
            matches = sorted(match for match in glob.glob(spec) if os.path.isfile(match))
            if not matches:
                raise DataError(f"no file matches the glob {spec}")
            paths.extend(matches)
        else:
            paths.append(spec)
    return paths


def caption_images(model, paths, decoder, batch_size):
    """Per image: ``(words with <eos> if emitted, alpha, beta, RGB image)``."""
    from imcap.models import preprocessing

    config = model.config
    outputs = []
    for start in range(0, len(paths), batch_size):
        images = load_images(paths[start:start + batch_size], config.image_size)
        out = decoder.decode(preprocessing.preprocess_images(images, config.cnn))
        for row, image in enumerate(images):
            words = config.vocabulary.ids_to_words(out["words"][row], keep_end=True)
            length = len(words)
            outputs.append((words, out["alpha"][row, :length], out["beta"][row, :length],
                            image))
    return outputs


def main(argv=None):
    args = get_parser().parse_args(argv)
    from imcap.utils.quiet import start_tensorflow

    start_tensorflow()  # before Keras, without TensorFlow's start-up noise
    from imcap import decoding
    from imcap.models import saving

    with one_line_errors("caption"):
        check_args(args)
        paths = expand_images(args.images)
        model = saving.load_model(args.model_file, compile=False)
        if model.encoder is None:
            raise DataError(f"checkpoint {args.model_file} takes precomputed features, not "
                            f"images: caption its features with test.py -features PATH")
        decoder = decoding.make_decoder(model, args.bsize, args.temperature, args.seqlen,
                                        **decoding_options(args))
        if args.att_dir:
            os.makedirs(args.att_dir, exist_ok=True)
        results = caption_images(model, paths, decoder, args.bs)
    records = []
    for path, (words, alpha, beta, image) in zip(paths, results):
        caption = " ".join(w for w in words if w != "<eos>")
        print(f"{path}\t{caption}")
        record = {"image": path, "caption": caption, "words": words}
        if model.config.use_sentinel:
            record["beta"] = [round(float(b), 4) for b in beta]
        if args.att_dir and model.config.attention:
            from imcap.evaluation.attention_maps import attention_figure

            name = os.path.splitext(os.path.basename(path))[0]
            figure = os.path.join(args.att_dir, f"{name}_attention.png")
            attention_figure(image, words, alpha, beta if model.config.use_sentinel else None,
                             args.sig, args.th, path=figure)
            record["figure"] = figure
        records.append(record)
    if args.att_dir:
        write_json_atomic(os.path.join(args.att_dir, "captions.json"), records)
    return records


def cli():
    """The console script: main() without its return value (which would be the exit status)."""
    main()


if __name__ == "__main__":
    cli()

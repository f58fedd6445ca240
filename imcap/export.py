"""Export a trained captioner as a TensorFlow SavedModel for serving:

    python -m imcap.export -model_file MODEL.keras -out_dir EXPORT [-bsize K] [-seqlen N]

The ``serving_default`` signature takes a batch of encoded images (``images``: string tensor of
JPEG / PNG / GIF / BMP bytes, any size, grayscale or colour) and returns, per image, the
``caption`` (string), its ``words`` (strings, empty after the end), the attention over the
regions per word (``attention``, float32 (B, L, K)) and the sentinel weight per word
(``sentinel``, (B, L)). Decoding (greedy, or beam search with ``-bsize``) runs inside the
graph; loading needs only TensorFlow (``tf.saved_model.load``), not imcap or Keras.
Images are decoded and resized with TensorFlow's bilinear resize (prepro_coco.py uses
Pillow's), then preprocessed as in training.
"""

import shutil

# no TensorFlow at import: --help stays fast (export() loads it)
from imcap.utils.cli import (
    ArgumentParser, add_decoding_options, decoding_options, one_line_errors)
from imcap.utils.fileio import DataError, atomic_output
from imcap.utils.quiet import start_tensorflow


def serving_function(model, decoder):
    """``images`` (B,) encoded bytes -> caption, words, attention and sentinel weights."""
    tf = start_tensorflow()
    from imcap.models.preprocessing import preprocess_images

    config = model.config
    size = config.image_size
    vocabulary = tf.constant([""] + list(config.vocabulary.words))  # id 0: padding

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")
        return tf.clip_by_value(tf.round(image), 0, 255)

    def serve(images):
        pixels = tf.map_fn(decode_one, images, fn_output_signature=tf.float32)
        out = decoder.graph(preprocess_images(pixels, config.cnn))
        ids = out["words"]
        keep = (ids != 0) & (ids != config.vocabulary.end_id)
        words = tf.where(keep, tf.gather(vocabulary, ids), tf.constant(""))
        captions = tf.strings.strip(tf.strings.regex_replace(
            tf.strings.reduce_join(words, axis=1, separator=" "), " +", " "))
        return {"caption": captions, "words": words, "attention": out["alpha"],
                "sentinel": out["beta"]}

    return serve


def export(model_file, out_dir, beam_size=1, max_length=None, **options):
    """Writes the SavedModel to ``out_dir`` (through ``out_dir.partial``); returns ``out_dir``."""
    tf = start_tensorflow()  # before Keras, without TensorFlow's start-up noise
    import keras

    from imcap import decoding
    from imcap.models import saving

    model = saving.load_model(model_file, compile=False)
    if model.encoder is None:
        raise DataError(f"checkpoint {model_file} takes precomputed features, not images: "
                        f"the export captions image bytes, so it needs a captioner with its CNN")
    decoder = decoding.make_decoder(model, beam_size, max_length=max_length, **options)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_function(model, decoder),
                         input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    with atomic_output(out_dir, directory=True) as temporary:
        shutil.rmtree(temporary, ignore_errors=True)  # a killed run's
        archive.write_out(temporary, verbose=False)
    return out_dir


def main(argv=None):
    parser = ArgumentParser(prog="export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("-model_file", "--model_file", required=True)
    parser.add_argument("-out_dir", "--out_dir", required=True, help="SavedModel folder")
    parser.add_argument("-bsize", "--bsize", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("-seqlen", "--seqlen", type=int, default=None,
                        help="maximum caption length with <start> and <eos>")
    add_decoding_options(parser)
    args = parser.parse_args(argv)
    if args.bsize < 1:
        parser.error(f"-bsize must be at least 1, got {args.bsize}")
    with one_line_errors("export"):
        path = export(args.model_file, args.out_dir, args.bsize, args.seqlen,
                      **decoding_options(args))
    print(path)


if __name__ == "__main__":
    main()

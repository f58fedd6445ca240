"""One command-line parser for every imcap tool, with imcap_keras' flag names and defaults.

Every flag of imcap_keras' ``args.py`` keeps its name and, but for two (below), its default
(``-model_name``, ``-bs``, ``--sgate``, ...); the modern double-dash spelling works too
(``--bs 32``, ``--model_name x``), and imcap_keras' switches accept an explicit value
(``--sgate True``, ``--sgate false``). ``python args.py --help`` (from ``imcap/``) lists them all.

Flags imcap_keras declared but never used are accepted and say so in their help:
``-vocab_size`` (the vocabulary comes from the preprocessed JSON; if given it must match),
``-nfilters`` and ``-convsize`` (both follow from ``-cnn`` / ``-cnn_layer`` / ``-imsize``; if given
they must match), ``-n_caps`` (see ``-seq_per_img``), ``-workers`` (tf.data tunes its own
parallelism), ``-mode`` (train.py trains, test.py tests), ``--bn`` (no batch-norm option) and
``-coco_path`` (prepro_coco.py has its own). Two defaults differ from imcap_keras', which were its
author's folders: ``-data_folder`` is the current folder and ``-coco_path`` is None.

``--help`` shows every default. ``test.py --help`` lists only the flags test.py reads; it still
accepts the others (and ignores them), so one command line can serve train.py and test.py.
"""

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from imcap.models.backbones import BACKBONES  # noqa: E402
from imcap.models.config import CNN_NAMES, DTYPE_POLICIES  # noqa: E402
from imcap.utils.cli import (  # noqa: E402
    ArgumentParser, non_negative, positive, probability)

TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
# the flags test.py reads (its --help lists only these)
TEST_FLAGS = ("model_name", "h5file", "json_file", "model_file", "data_folder", "seqlen", "seed",
              "bs", "bsize", "temperature", "length_penalty", "ban_unk", "remove_bad_endings",
              "block_trigrams",
              "split", "results_file",
              "save_attention", "cnn_train", "scst", "features")
METRICS = ["loss", "CIDEr", "Bleu_4", "Bleu_3", "Bleu_2", "Bleu_1", "ROUGE_L", "METEOR"]


def str2bool(value):
    """``True``/``False`` spelled any usual way, for ``--sgate True``."""
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def negated_bool(value):
    """``--lstm True`` switches attention off (imcap_keras stored --lstm into
    ``attlstm=False``)."""
    return not str2bool(value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, or the words in its ``shown_default`` attribute."""

    def _get_help_string(self, action):
        shown = getattr(action, "shown_default", None)
        if shown is not None and action.help is not argparse.SUPPRESS:
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


class Parser(ArgumentParser):
    """An ArgumentParser where every ``-name`` flag is also ``--name``."""

    def option(self, name, **kwargs):
        """Adds ``-name`` and ``--name`` (a single-dash imcap_keras flag and its modern
        spelling)."""
        return self.add_argument(f"-{name}", f"--{name}", dest=kwargs.pop("dest", name), **kwargs)

    def switch(self, name, dest, default=False, help=None):
        """imcap_keras' ``--name`` store_true switch, also accepting ``--name True|False``."""
        return self.add_argument(f"--{name}", dest=dest, nargs="?", const=not default,
                                 default=default, type=str2bool, metavar="BOOL", help=help)


def get_parser(prog=None):
    """Every flag; ``prog="test.py"`` hides from --help the flags test.py does not read."""
    parser = Parser(prog=prog, formatter_class=HelpFormatter,
                    description="imcap: image captioning with adaptive attention (Keras 3).",
                    epilog="Flags take one dash as in imcap_keras (-bs 32) or two (--bs 32).")
    parser.option("model_name", default="model", help="base name of saved models")
    parser.option("h5file", default="cocotalk_challenge.h5",
                  help="HDF5 written by prepro_coco.py, in DATA_FOLDER/data")
    parser.option("json_file", default="cocotalk_challenge.json",
                  help="JSON written by prepro_coco.py, in DATA_FOLDER/data")
    parser.option("model_file", default=None,
                  help="checkpoint to load: the one test.py captions with (None: "
                       "DATA_FOLDER/models/MODEL_NAME_best.keras, or "
                       "MODEL_NAME_cnntrain_best.keras with --cnntrain), or the one train.py "
                       "starts from (None: a new model)")
    parser.option("coco_path", default=None,
                  help="unused by train.py and test.py, which read the preprocessed data in "
                       "DATA_FOLDER/data; MS COCO is read by prepro_coco.py --coco_path DIR")
    parser.option("data_folder", default=".",
                  help="folder with data/ (prepro_coco.py's output); models/, results/, logs/ "
                       "and tmp/ are written there, created when missing")

    parser.option("cnn", default="resnet", choices=CNN_NAMES,
                  help="CNN encoder (README, Backbones): " + "; ".join(
                      f"{name} = {entry.description}" for name, entry in BACKBONES.items()))
    parser.option("cnn_weights", default="imagenet",
                  help="'imagenet' (downloaded by Keras into ~/.keras/models on first use), "
                       "'none' (random initialisation) or a local weights file (without "
                       "network: the file Keras would download, e.g. "
                       "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)")
    parser.option("cnn_layer", default=None,
                  help="take the region grid from this layer (e.g. conv4_block6_out; None: "
                       "the last convolutional block)")
    parser.option("imsize", default=256, type=positive(int), help="image size")
    parser.option("vocab_size", default=None, type=positive(int),
                  help="unused by imcap_keras: the vocabulary comes from the JSON; if given it "
                       "must match the JSON's size (words + padding)")
    parser.option("n_caps", default=5, type=positive(int),
                  help="unused by imcap_keras; see -seq_per_img")
    parser.option("seq_per_img", default=1, type=positive(int),
                  help="captions drawn per image and epoch (1: imcap_keras' one random caption)")

    parser.option("seqlen", default=18, type=positive(int),
                  help="maximum caption length when decoding, <start> and <eos> included")
    parser.option("lstm_dim", default=512, type=positive(int), help="LSTM units")
    parser.option("emb_dim", default=512, type=positive(int),
                  help="word embedding and attention key size")
    parser.option("z_dim", default=512, type=positive(int),
                  help="projected region and context size")
    parser.option("dr_ratio", default=0.5, type=probability,
                  help="LSTM recurrent dropout (one mask per gate, as in imcap_keras; "
                       "imcap_keras' LSTM input dropout never took effect and is not applied); "
                       "also the rate of --dr")
    parser.option("finetune_start_layer", default=None, type=non_negative(int),
                  help="first CNN layer that fine-tuning trains, the stem below stays frozen "
                       "(default: the backbone's, e.g. 6 for the ResNets)")
    parser.option("nfilters", default=None, type=positive(int),
                  help="unused by imcap_keras: follows from -cnn/-cnn_layer; if given it must "
                       "match")
    parser.option("convsize", default=None, type=positive(int),
                  help="unused by imcap_keras: follows from -imsize; if given it must match")
    parser.option("sent_dropout", default=0.0, type=probability,
                  help="fraction of training captions whose sentinel is switched off (beta = 0)")
    parser.switch("position_embedding", "position_embedding",
                  help="add a learned position embedding to the region features")
    parser.option("standardize", default="none", choices=["none", "channel", "position"],
                  help="standardise region features with training-split statistics: per-channel "
                       "scale, or per-channel scale and per-position centring (computes the "
                       "feature cache to get them)")

    parser.option("seed", default=123, type=int,
                  help="random seed (of training, and of test.py's sampling)")
    parser.option("bs", default=32, type=positive(int), help="batch size (images)")
    parser.option("optim", default="adam", choices=["adam", "SGD", "adadelta", "adagrad",
                                                    "rmsprop"], help="optimizer")
    parser.option("alpha", default=0.9, type=float, help="Adam's beta_1")
    parser.option("beta", default=0.999, type=float, help="Adam's beta_2")
    parser.option("lr", default=5e-4, type=positive(float), help="learning rate")
    parser.option("lrmult_conv", default=0.001, type=positive(float),
                  help="learning-rate multiplier of the CNN with --lrmults")
    parser.option("ftlr", default=1e-5, type=positive(float), help="fine-tuning learning rate")
    parser.option("decay", default=0.0, type=non_negative(float), help="learning-rate decay")
    parser.option("clip", default=5.0, type=positive(float), help="gradient clipping (value)")
    parser.option("nepochs", default=20, type=non_negative(int),
                  help="epochs with the CNN frozen")
    parser.option("ftnepochs", default=30, type=non_negative(int),
                  help="epochs fine-tuning the CNN")
    parser.option("scst_epochs", default=0, type=non_negative(int),
                  help="epochs of self-critical training (stage 3, reward CIDEr-D) after the "
                       "other stages, or alone from -model_file with -nepochs 0")
    parser.option("scst_lr", default=5e-5, type=positive(float), help="SCST learning rate")
    parser.option("scst_sample_n", default=5, type=positive(int),
                  help="SCST: captions sampled per image")
    parser.option("scst_baseline", default="mean", choices=["mean", "greedy"],
                  help="SCST: a sample's baseline is the mean reward of the image's other "
                       "samples, or its greedy caption's reward")
    parser.option("scst_max_length", default=None, type=positive(int),
                  help="SCST: sampled caption length with <start> and <eos> (None: -seqlen)")
    parser.option("pat", default=5, type=positive(int), help="early-stopping patience")
    parser.option("workers", default=2, type=positive(int),
                  help="unused by imcap_keras' Keras 2 loader; tf.data tunes its own "
                       "parallelism")
    parser.option("es_prev_words", default="gen", choices=["gt", "gen"],
                  help="early stopping scores generated captions (gen) or teacher-forced "
                       "ones (gt)")
    parser.option("es_metric", default="CIDEr", choices=METRICS, help="early-stopping metric")
    parser.option("bsize", default=1, type=positive(int), help="beam size (1: greedy)")
    parser.option("temperature", default=-1.0, type=float,
                  help="sampling temperature (<= 0: no sampling)")
    parser.option("length_penalty", default=0.0, type=non_negative(float),
                  help="beam search: compare hypotheses by log-probability / length^this "
                       "(0: plain log-probability)")
    parser.switch("ban_unk", "ban_unk", help="decoding: never emit UNK")
    parser.switch("block_trigrams", "block_trigrams",
                  help="decoding: never repeat a trigram within a caption")
    parser.switch("remove_bad_endings", "remove_bad_endings",
                  help="decoding: never end a caption right after a, an, t"
                       "he, in, for, at, of, with, before, after, on, upon, near, to, is, are, am")
    parser.option("split", default="test", choices=["train", "val", "test"],
                  help="test.py: the split to caption")
    parser.option("results_file", default=None,
                  help="test.py: where to write the COCO result JSON (None: "
                       "DATA_FOLDER/results/CHECKPOINT_SPLIT_METHOD.json)")
    parser.switch("save_attention", "save_attention",
                  help="test.py: also write the words, attention and sentinel weights of every "
                       "caption to an HDF5 beside the results")
    parser.option("mode", default="train", choices=["train", "test"],
                  help="unused by imcap_keras' tools: train.py trains, test.py tests")
    parser.option("dtype", default="float32", choices=DTYPE_POLICIES,
                  help="Keras dtype policy (mixed precision)")

    parser.switch("cnntrain", "cnn_train",
                  help="train.py: run only stage 2, fine-tuning the CNN too, from "
                       "-model_file (e.g. stage 1's DATA_FOLDER/models/MODEL_NAME_best.keras; "
                       "without it, from a new model); test.py: test the fine-tuned checkpoint, "
                       "MODEL_NAME_cnntrain_best.keras")
    parser.switch("scst", "scst", help="test.py: test the self-critical checkpoint, "
                  "MODEL_NAME_scst_best.keras")
    lstm = parser.add_argument(
        "--lstm", dest="attlstm", nargs="?", const=False, default=True, type=negated_bool,
        metavar="BOOL",
        help="imcap_keras' plain LSTM baseline: no attention, each word comes straight from "
             "the LSTM state (which sees the mean image feature at every step); --sgate then has "
             "no effect. Without --lstm the decoder attends over the image regions: spatial "
             "attention, plus the visual sentinel (adaptive attention) with --sgate")
    lstm.shown_default = "off, i.e. attention"
    parser.switch("lrmults", "lrmults", help="scale the CNN's updates by -lrmult_conv")
    parser.switch("sgate", "sgate", help="adaptive attention with the visual sentinel")
    parser.switch("log_term", "log_term", help="log to the terminal instead of a file")
    parser.switch("dr", "dr", help="imcap_keras' extra dropout, at -dr_ratio: on v_g, the "
                  "regions, the word embedding, the LSTM input, inside the attention and after "
                  "the output MLP")
    parser.switch("bn", "bn", help="unused by imcap_keras: there is no batch-norm option")
    parser.option("accum", default=1, type=positive(int),
                  help="gradient accumulation: average the gradients of this many batches per "
                       "update (an effective batch of -bs x -accum images)")
    parser.add_argument("--mixed_precision", dest="mixed_precision", nargs="?",
                        const="auto", default=None, choices=["auto", "float16", "bfloat16"],
                        help="mixed precision (sets -dtype): float16 on a GPU, bfloat16 "
                             "otherwise ('auto'), or as given")
    parser.switch("precompute_feats", "precompute_feats",
                  help="stage 1: run the frozen CNN once over all images into a float16 feature "
                       "cache (DATA_FOLDER/tmp) and train the decoder from it")
    parser.option("features", default=None,
                  help="precomputed region features instead of images: a features file (HDF5: "
                       "features, image_ids, optional num_regions) or a folder of "
                       "{image_id}.npz / .npy (see README); train.py then runs stage 1 only")
    parser.option("ckpt_every", default=0, type=non_negative(int),
                  help="also checkpoint every this many training steps (0: after each epoch "
                       "only); --resume loses at most that much work")
    parser.switch("resume", "resume",
                  help="continue an interrupted train.py run from its last checkpoint")
    parser.option("strategy", default="default", choices=["default", "mirrored", "multiworker"],
                  help="tf.distribute: one device; mirrored (all local GPUs, else the CPU "
                       "devices); multiworker (MultiWorkerMirroredStrategy from TF_CONFIG)")
    parser.option("cpu_devices", default=1, type=positive(int),
                  help="split the CPU into this many logical devices (to run --strategy "
                       "mirrored without GPUs)")
    if prog == "test.py":
        parser.description = "test.py: caption a split with a trained model."
        parser.epilog = ("Flags take one dash as in imcap_keras (-bs 32) or two (--bs 32). "
                         "The other flags of train.py are accepted and ignored: the model's "
                         "settings come from its checkpoint.")
        for action in parser._actions:
            if action.option_strings and action.dest not in TEST_FLAGS + ("help",):
                action.help = argparse.SUPPRESS
    return parser


def parse_args(argv=None, prog=None):
    """The flags of ``argv``; ``prog`` names the script in errors and --help (see get_parser)."""
    args = get_parser(prog).parse_args(argv)
    if args.mixed_precision:
        kind = args.mixed_precision
        if kind == "auto":
            import tensorflow as tf
            kind = "float16" if tf.config.list_physical_devices("GPU") else "bfloat16"
        args.dtype = f"mixed_{kind}"
    return args


if __name__ == "__main__":
    parse_args()

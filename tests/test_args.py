"""args.py: imcap_keras' flags and defaults, both spellings, explicit booleans, checks."""

import os
import re
import subprocess
import sys

import pytest

from imcap import args as imcap_args
from imcap.train import training_config
from imcap.training.config import OptimizerConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMCAP_KERAS_DEFAULTS = {
    "model_name": "model", "h5file": "cocotalk_challenge.h5",
    "json_file": "cocotalk_challenge.json", "model_file": None,
    "cnn": "resnet", "imsize": 256, "n_caps": 5, "seqlen": 18, "lstm_dim": 512, "emb_dim": 512,
    "z_dim": 512, "dr_ratio": 0.5, "finetune_start_layer": None, "seed": 123, "bs": 32,
    "optim": "adam", "alpha": 0.9, "beta": 0.999, "lr": 5e-4, "lrmult_conv": 0.001,
    "ftlr": 1e-5, "decay": 0.0, "clip": 5.0, "nepochs": 20, "ftnepochs": 30, "pat": 5,
    "workers": 2, "es_prev_words": "gen", "es_metric": "CIDEr", "bsize": 1,
    "temperature": -1.0, "mode": "train", "cnn_train": False, "attlstm": True,
    "lrmults": False, "sgate": False, "log_term": False, "dr": False, "bn": False,
}


# imcap_keras' defaults were its author's folders (/work/asalvador/sat_keras/,
# /seq/segmentation/COCO/tools)
CHANGED_DEFAULTS = {"data_folder": ".", "coco_path": None}


def test_imcap_keras_defaults():
    parsed = vars(imcap_args.parse_args([]))
    for name, value in {**IMCAP_KERAS_DEFAULTS, **CHANGED_DEFAULTS}.items():
        assert parsed[name] == value, name


@pytest.mark.parametrize("argv,expected", [
    (["-bs", "8", "-model_name", "x"], {"bs": 8, "model_name": "x"}),
    (["--bs", "8", "--model_name", "x"], {"bs": 8, "model_name": "x"}),
    (["--sgate"], {"sgate": True}),
    (["--sgate", "True"], {"sgate": True}),
    (["--sgate", "false"], {"sgate": False}),
    (["--sgate", "1", "--cnntrain", "yes"], {"sgate": True, "cnn_train": True}),
    (["--lstm"], {"attlstm": False}),
    (["--lstm", "False"], {"attlstm": True}),
    (["--dr", "--lrmults", "--log_term"], {"dr": True, "lrmults": True, "log_term": True}),
    (["-es_metric", "Bleu_4", "-es_prev_words", "gt"], {"es_metric": "Bleu_4",
                                                        "es_prev_words": "gt"}),
    (["-cnn", "vgg16", "-cnn_weights", "none", "-cnn_layer", "block4_pool"],
     {"cnn": "vgg16", "cnn_weights": "none", "cnn_layer": "block4_pool"}),
])
def test_spellings(argv, expected):
    parsed = vars(imcap_args.parse_args(argv))
    for name, value in expected.items():
        assert parsed[name] == value, name


@pytest.mark.parametrize("argv,message", [
    (["-bs", "-1"], "argument -bs/--bs: must be positive, got -1"),
    (["-bsize", "0"], "argument -bsize/--bsize: must be positive, got 0"),
    (["-dr_ratio", "1.5"], r"argument -dr_ratio/--dr_ratio: must be in \[0, 1\), got 1.5"),
    (["--sgate", "maybe"], "expected true or false, got 'maybe'"),
    (["-cnn", "alexnet"], "invalid choice: 'alexnet'"),
    (["-es_metric", "SPICE"], "invalid choice: 'SPICE'"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
])
def test_bad_values_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        imcap_args.parse_args(argv)
    assert exit_info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_model_config_from_flags():
    parsed = imcap_args.parse_args(["--sgate", "-emb_dim", "16", "-z_dim", "12", "-lstm_dim",
                                    "10", "-sent_dropout", "0.5", "--position_embedding", "--dr",
                                    "-dtype", "mixed_bfloat16", "-cnn_weights", "none"])
    vocabulary = ["<start>", "a", "<eos>"]
    config = training_config(parsed).model_config(vocabulary)
    assert (config.emb_dim, config.z_dim, config.lstm_dim) == (16, 12, 10)
    assert config.use_sentinel and config.attention and config.dropout_layers
    assert config.sent_dropout == 0.5 and config.position_embedding
    assert config.dtype_policy == "mixed_bfloat16" and config.vocabulary.size == 4
    wrong = imcap_args.parse_args(["-vocab_size", "9570"])
    with pytest.raises(ValueError, match="-vocab_size 9570 does not match the preprocessed "
                                         "JSON, which has 4"):
        training_config(wrong).model_config(vocabulary)
    checks = training_config(imcap_args.parse_args(["-nfilters", "2048", "-convsize", "7"]))
    checks.check_encoder(49, 2048)
    with pytest.raises(ValueError, match="-convsize 7 does not match the encoder, whose grid "
                                         "is 8x8"):
        checks.check_encoder(64, 2048)
    with pytest.raises(ValueError, match="-nfilters 2048 does not match the encoder, which "
                                         "gives 1024 channels"):
        checks.check_encoder(49, 1024)


def test_training_config_maps_imcap_keras_flags():
    """Each flag lands in the field that says what it means, and the stages follow
    --cnntrain / -ftnepochs."""
    config = training_config(imcap_args.parse_args([
        "-data_folder", "runs", "-bs", "7", "-seq_per_img", "3", "-pat", "2", "-es_prev_words",
        "gt", "-es_metric", "Bleu_4", "-optim", "SGD", "-alpha", "0.8", "-clip", "2", "-decay",
        "0.1", "-accum", "4", "--lrmults", "-lrmult_conv", "0.01", "-lr", "0.3", "-ftlr",
        "0.2", "-nepochs", "3", "-ftnepochs", "4", "--precompute_feats", "-ckpt_every", "5",
        "-model_file", "m.keras", "--resume"]))
    assert (config.folder, config.batch_size, config.captions_per_image, config.patience) == \
        ("runs", 7, 3, 2)
    assert config.teacher_forced and config.metric == "Bleu_4" and config.maximize
    assert config.optimizer == OptimizerConfig("SGD", 0.8, 0.999, 2.0, 0.1, 4, 0.01)
    assert (config.stage_learning_rate("frozen"), config.stage_learning_rate("finetune")) == \
        (0.3, 0.2)
    assert (config.stage_epochs("frozen"), config.stage_epochs("finetune")) == (3, 4)
    assert config.stages == ("frozen", "finetune") and config.cache_features
    assert (config.checkpoint_every, config.start_from, config.resume) == (5, "m.keras", True)
    assert training_config(imcap_args.parse_args(["--cnntrain"])).stages == ("finetune",)
    assert training_config(imcap_args.parse_args(["-ftnepochs", "0"])).stages == ("frozen",)
    plain = training_config(imcap_args.parse_args(["-es_metric", "loss"]))
    assert plain.optimizer.cnn_multiplier is None and not plain.maximize


@pytest.mark.parametrize("command,cwd", [
    ([sys.executable, "args.py", "--help"], os.path.join(REPO, "imcap")),
    ([sys.executable, "-m", "imcap.args", "--help"], REPO),
])
def test_help_as_imcap_keras_documents_it(command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for flag in ("-model_name", "--sgate", "-es_metric", "-finetune_start_layer", "-cnn_weights"):
        assert flag in done.stdout


def test_mixed_precision_flag_sets_the_dtype_policy():
    assert imcap_args.parse_args([]).dtype == "float32"
    assert imcap_args.parse_args(["--mixed_precision"]).dtype == "mixed_bfloat16"  # no GPU here
    assert imcap_args.parse_args(["--mixed_precision", "float16"]).dtype == "mixed_float16"
    assert imcap_args.parse_args(["-accum", "4"]).accum == 4


def test_the_readme_lists_every_flag():
    """The README's flag table is the parser's: a new flag cannot go undocumented."""
    import os

    from imcap.args import get_parser

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")).read()
    for action in get_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert f"| `{action.option_strings[0]}` |" in readme, action.option_strings[0]


def flags_in(text):
    """The first spelling of every flag of the parser that ``text`` mentions."""
    return {action.option_strings[0] for action in imcap_args.get_parser()._actions
            if action.option_strings and re.search(
                rf"(?<![\w-]){re.escape(action.option_strings[0])}(?!\w)", text)}


def test_help_shows_every_default_and_no_help_ends_in_a_colon():
    parser = imcap_args.get_parser("train.py")
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert not action.help.rstrip().endswith(":"), action.option_strings[0]
            assert "(default: " in formatter._get_help_string(action), action.option_strings[0]
    text = " ".join(parser.format_help().split())
    for shown in ("-bs BS, --bs BS batch size (images) (default: 32)",
                  "(default: cocotalk_challenge.h5)", "when missing (default: .)",
                  "prepro_coco.py --coco_path DIR (default: None)"):
        assert shown in text, shown
    options = text[text.index("options:"):]
    lstm = options[options.index("--lstm [BOOL]"):options.index("--lrmults [BOOL]")]
    assert "no attention" in lstm and "spatial attention" in lstm and "--sgate" in lstm
    assert lstm.rstrip().endswith("(default: off, i.e. attention)")
    assert "True" not in lstm


def test_test_py_help_lists_only_the_flags_test_py_reads_and_accepts_the_others():
    text = imcap_args.get_parser("test.py").format_help()
    expected = {action.option_strings[0] for action in imcap_args.get_parser()._actions
                if action.dest in imcap_args.TEST_FLAGS}
    assert flags_in(text) == expected | {"-h"}
    assert "-imsize" in flags_in(imcap_args.get_parser().format_help())
    parsed = imcap_args.parse_args(["-imsize", "64", "--sgate", "-bsize", "3"], "test.py")
    assert (parsed.imsize, parsed.sgate, parsed.bsize) == (64, True, 3)


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_help_is_fast_and_does_not_start_tensorflow(script):
    """-X importtime lists every module imported: --help imports neither TensorFlow nor Keras."""
    done = subprocess.run([sys.executable, "-X", "importtime", os.path.join("imcap", script),
                           "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {script}")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}
    other = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert other == []

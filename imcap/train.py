"""Train a captioner, as imcap_keras documents it: ``python train.py --sgate`` (from
``imcap/``), ``python -m imcap.train``, or ``imcap-train``; ``python train.py --help`` lists
the flags.

Reads ``DATA_FOLDER/data/{-json_file, -h5file}`` (written by prepro_coco.py), writes checkpoints
and the training state to ``DATA_FOLDER/models``, logs to ``DATA_FOLDER/logs/MODEL_NAME.log``
(``--log_term``: the terminal only). The terminal shows one line per epoch (stage, epoch, loss,
validation score, seconds) with a progress bar while an epoch trains. Every fatal error, and
Ctrl-C, is written to the log too. ``training_config`` turns the flags into the
``TrainingConfig`` the trainer reads; see ``imcap.training.trainer`` for the stages.
"""

import contextlib
import logging
import os
import shlex
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from imcap import args as imcap_args  # noqa: E402  (no TensorFlow: --help stays fast)
from imcap.utils.cli import error_line, one_line_errors  # noqa: E402

log = logging.getLogger("imcap.train")
FILE_ONLY = {"file_only": True}  # a record for the log file that the terminal already shows


def training_config(args):
    """The ``TrainingConfig`` the parsed flags describe (imcap_keras' names, mapped once)."""
    from imcap.training.config import OptimizerConfig, ScstConfig, TrainingConfig

    model = dict(
        max_length=args.seqlen, cnn=args.cnn, cnn_weights=args.cnn_weights,
        cnn_layer=args.cnn_layer, image_size=args.imsize, emb_dim=args.emb_dim,
        z_dim=args.z_dim, lstm_dim=args.lstm_dim, dr_ratio=args.dr_ratio,
        dropout_layers=args.dr, use_sentinel=args.sgate, attention=args.attlstm,
        sent_dropout=args.sent_dropout, position_embedding=args.position_embedding,
        standardize=args.standardize, dtype_policy=args.dtype)
    optimizer = OptimizerConfig(
        name=args.optim, beta_1=args.alpha, beta_2=args.beta, clip=args.clip, decay=args.decay,
        accumulation=args.accum, cnn_multiplier=args.lrmult_conv if args.lrmults else None)
    if args.features and args.cnn_train:
        raise ValueError("--cnntrain fine-tunes the CNN, and with -features there is none")
    stages = ("finetune",) if args.cnn_train else ("frozen",) * bool(args.nepochs) + (
        ("finetune",) if args.ftnepochs and not args.features else ())
    stages += ("scst",) * bool(args.scst_epochs)
    if not stages:
        raise ValueError("nothing to train: -nepochs, -ftnepochs and -scst_epochs are all 0")
    if stages == ("scst",) and not args.model_file:
        raise ValueError("self-critical training alone (-nepochs 0 -scst_epochs N) starts from "
                         "a trained model: pass -model_file")
    return TrainingConfig(
        folder=args.data_folder, json_file=args.json_file, h5file=args.h5file,
        model_name=args.model_name, model=model, expected_vocab_size=args.vocab_size,
        expected_channels=args.nfilters, expected_grid=args.convsize, stages=stages,
        epochs=args.nepochs, finetune_epochs=args.ftnepochs, learning_rate=args.lr,
        finetune_learning_rate=args.ftlr, optimizer=optimizer,
        finetune_start_layer=args.finetune_start_layer, start_from=args.model_file,
        resume=args.resume, batch_size=args.bs, captions_per_image=args.seq_per_img,
        cache_features=args.precompute_feats, features=args.features,
        checkpoint_every=args.ckpt_every, metric=args.es_metric, patience=args.pat,
        teacher_forced=args.es_prev_words == "gt", max_length=args.seqlen, seed=args.seed,
        strategy=args.strategy, scst=ScstConfig(
            epochs=args.scst_epochs, learning_rate=args.scst_lr, sample_n=args.scst_sample_n,
            baseline=args.scst_baseline, max_length=args.scst_max_length or args.seqlen,
            ban_unk=args.ban_unk, remove_bad_endings=args.remove_bad_endings))


def check_inputs(run, config):
    """Fails early, with the file named, when the preprocessed data is missing."""
    from imcap.utils.fileio import DataError

    for name in (config.json_file, config.h5file):
        path = run.data_file(name)
        if not os.path.isfile(path):
            raise DataError(f"preprocessed data not found: {path} (run prepro_coco.py with "
                            f"--output_json/--output_h5 there, or set -data_folder)")


def setup_logging(run, to_terminal_only):
    """The terminal gets each record's message; the log file (unless ``to_terminal_only``)
    gets it with a time stamp, plus fatal errors. Returns the log file's path, or None."""
    terminal = logging.StreamHandler(sys.stdout)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    terminal.addFilter(lambda record: not getattr(record, "file_only", False))
    handlers, path = [terminal], None
    if not to_terminal_only:
        os.makedirs(run.logs, exist_ok=True)
        path = run.log_file
        to_file = logging.FileHandler(path)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(to_file)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    return path


def resume_command(argv):
    """The command line that goes on with an interrupted run."""
    program = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else ""
    if program.endswith("train.py"):
        start = ["python", os.path.relpath(program)]
    elif program:
        start = ["python", "-m", "imcap.train"]
    else:
        start = [os.path.basename(sys.argv[0]) or "imcap-train"]
    flags = [a for a in argv if a.lstrip("-") != "resume"]
    return " ".join(shlex.quote(a) for a in start + flags + ["--resume"])


@contextlib.contextmanager
def fatal_errors_logged():
    """Writes any error that ends the run to the log (with its traceback when it is not one of
    the one-line errors), then lets it go on to the terminal."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as e:
        from imcap.training.store import TrainingError
        from imcap.utils.fileio import DataError
        expected = isinstance(e, (DataError, ValueError, OSError, TrainingError))
        log.error("train: error: %s", error_line(e), exc_info=not expected, extra=FILE_ONLY)
        raise


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = imcap_args.parse_args(argv, "train.py")
    if args.accum > 1 and args.strategy != "default":
        # keras-team/keras#20582: the optimizer's accumulate-or-apply cond holds the replicas'
        # gradient all-reduce, which TensorFlow refuses inside a cond (it failed at the first
        # step, after the data and the model were built)
        imcap_args.get_parser("train.py").error(
            f"-accum {args.accum} cannot run with --strategy {args.strategy}: Keras 3's "
            f"gradient accumulation fails under a TensorFlow distribution strategy "
            f"(keras-team/keras#20582); the replicas already split -bs, so use -accum 1 with a "
            f"larger -bs, or -accum on one device")
    from imcap.utils.quiet import start_tensorflow
    tf = start_tensorflow()

    import keras
    from imcap.training.distribute import make_strategy, output_folder
    from imcap.training.run_folder import RunFolder
    from imcap.training.store import TrainingError
    from imcap.training.trainer import Trainer

    trainer = None
    try:
        with one_line_errors("train", TrainingError), fatal_errors_logged():
            strategy = make_strategy(args.strategy, args.cpu_devices)  # before TensorFlow starts
            config = training_config(args)
            run = RunFolder(config.folder, config.model_name,
                            output_folder(config.folder, strategy))
            check_inputs(run, config)
            log_path = setup_logging(run, args.log_term)
            if log_path:
                log.info("train: logging to %s", log_path)
            keras.utils.set_random_seed(config.seed)
            if args.features and args.ftnepochs:
                log.info("train: -features: no CNN to fine-tune, stage 2 (-ftnepochs %d) is "
                         "skipped", args.ftnepochs)
            trainer = Trainer(config, run, strategy)
            state = trainer.run()
    except tf.errors.ResourceExhaustedError as e:
        message = (f"out of memory ({str(e).splitlines()[0][:200]}); use a smaller -bs with "
                   f"-accum N to keep the effective batch (-bs x N), --mixed_precision, or "
                   f"--precompute_feats for stage 1")
        log.error("train: error: %s", message, extra=FILE_ONLY)
        print(f"train: error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        where = trainer.interruption() if trainer is not None else "before training started"
        message = f"interrupted {where}; go on with: {resume_command(argv)}"
        log.error("train: %s", message, extra=FILE_ONLY)
        print(f"\ntrain: {message}", file=sys.stderr)
        sys.exit(130)
    for stage, stage_state in state.stages.items():
        log.info("stage %s: %d epochs, best %s %s, checkpoint %s", stage,
                 stage_state.epochs_done, config.metric, stage_state.best, stage_state.best_path)


if __name__ == "__main__":
    main()

"""Train a captioner, as the seed documents it: ``python train.py --sgate`` (from ``imcap/``),
``python -m imcap.train``, or ``imcap-train``; ``python args.py --help`` lists the flags.

Reads ``DATA_FOLDER/data/{-json_file, -h5file}`` (written by prepro_coco.py), writes checkpoints
and the training state to ``DATA_FOLDER/models``, logs to ``DATA_FOLDER/logs/MODEL_NAME.log``
(or the terminal with ``--log_term``). See ``imcap.trainer`` for the stages.
"""

import logging
import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from imcap import args as imcap_args  # noqa: E402
from imcap.distribute import make_strategy  # noqa: E402
from imcap.trainer import Trainer, TrainingError, check_inputs, output_folder  # noqa: E402
from imcap.utils.cli import one_line_errors  # noqa: E402


def setup_logging(args, strategy):
    handlers = [logging.StreamHandler(sys.stdout)]
    if not args.log_term:
        folder = os.path.join(output_folder(args, strategy), "logs")
        os.makedirs(folder, exist_ok=True)
        handlers = [logging.FileHandler(os.path.join(folder, f"{args.model_name}.log"))]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")


def main(argv=None):
    args = imcap_args.parse_args(argv, "train.py")
    try:
        with one_line_errors("train", TrainingError):
            strategy = make_strategy(args.strategy, args.cpu_devices)  # before TensorFlow starts
            check_inputs(args)
            setup_logging(args, strategy)
            keras.utils.set_random_seed(args.seed)
            state = Trainer(args, strategy).run()
    except tf.errors.ResourceExhaustedError as e:
        print(f"train: error: out of memory ({str(e).splitlines()[0][:200]}); use a smaller -bs "
              f"with -accum N to keep the effective batch (-bs x N), --mixed_precision, or "
              f"--precompute_feats for stage 1", file=sys.stderr)
        sys.exit(1)
    for stage, stage_state in state["stages"].items():
        print(f"stage {stage}: {stage_state.get('epochs_done', 0)} epochs, best "
              f"{args.es_metric} {stage_state.get('best')}, checkpoint "
              f"{stage_state.get('best_path')}")


if __name__ == "__main__":
    main()

"""Runs a command and kills it with SIGKILL at a chosen point: the fault injection of
``tests/test_faults.py``. The project's code is not changed; its functions are wrapped here.

    python tests/faults.py POINT N train|prepro ARGS...

POINT, N:
- ``step N``: in the middle of an epoch, at the end of the N-th training step of the run;
- ``validation N``: after the N-th validation has been computed, before anything is saved;
- ``checkpoint N``: while the N-th ``.keras`` checkpoint is being written (half of it is on
  disk under its temporary name);
- ``state N``: while the N-th training-state JSON is being written (half of it on disk);
- ``features N``: after N batches of the feature cache were written;
- ``images N``: after N chunks of images were written by prepro_coco.py.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def die_after_call(function, count):
    """``function`` wrapped to die right after its ``count``-th call returns."""
    calls = [0]

    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        calls[0] += 1
        if calls[0] == count:
            die()
        return result
    return wrapped


def half_written(save, temporary_name):
    """A saver that writes the file under its temporary name, cuts it in half, and dies."""
    def saver(obj, path):
        temporary = temporary_name(path)
        save(obj, temporary)
        size = os.path.getsize(temporary)
        with open(temporary, "r+b") as f:
            f.truncate(size // 2)
        die()
    return saver


def die_on_call(module, name, count, write_half):
    """Replaces ``module.name`` by a function that, on its ``count``-th call, calls
    ``write_half`` with the same arguments instead (which dies)."""
    real = getattr(module, name)
    calls = [0]

    def wrapped(*args):
        calls[0] += 1
        if calls[0] == count:
            write_half(*args)
        return real(*args)
    setattr(module, name, wrapped)


def main(point, count, command, argv):
    count = int(count)
    if command == "train":
        from imcap import train
        from imcap.training.callbacks import StepCheckpoint
        from imcap.training.trainer import Trainer
        from imcap.models import saving
        from imcap.data import features
        from imcap.utils import fileio

        if point == "step":
            StepCheckpoint.on_train_batch_end = die_after_call(
                StepCheckpoint.on_train_batch_end, count)
        elif point == "validation":
            Trainer.validate = die_after_call(Trainer.validate, count)
        elif point == "checkpoint":
            write_half = half_written(lambda model, path: model.save(path),
                                      lambda path: path[:-len(".keras")] + ".partial.keras")
            die_on_call(saving, "save_model", count, write_half)
        elif point == "state":
            write_half = half_written(lambda state, path: fileio.write_json(path, state),
                                      fileio.partial_path)
            die_on_call(saving, "write_state", count,
                        lambda path, state: write_half(state, path))
        elif point == "features":
            import functools

            features.cache_features = functools.partial(features.cache_features, batch_size=8)
            real_tqdm = features.tqdm

            class Dying(real_tqdm):
                updates = 0

                def update(self, n=1):
                    super().update(n)
                    Dying.updates += 1
                    if Dying.updates == count:
                        die()
            features.tqdm = Dying
        else:
            raise SystemExit(f"unknown point {point}")
        train.main(argv)
    elif command == "prepro":
        from imcap.data import images
        from imcap.utils import prepro_coco

        real_read = images.read_images

        def read_images(*args, **kwargs):
            for i, chunk in enumerate(real_read(*args, **kwargs)):
                if i == count:
                    die()
                yield chunk
        prepro_coco.images.read_images = read_images
        prepro_coco.cli(argv)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:4], sys.argv[4:])

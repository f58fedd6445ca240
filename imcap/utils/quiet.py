"""Keeping the terminal to what a user needs: TensorFlow's start-up noise and the Java
tokenizer's progress lines are captured, and passed on only when they say something else.

On a machine without a GPU, importing TensorFlow prints absl's "All log messages before
absl::InitializeLog()" banner and a cudart line twice, and its first device query a ``cuInit``
error; ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (they are logged before absl starts).
pycocoevalcap's PTB tokenizer runs Java, which prints "PTBTokenizer tokenized N tokens" to the
terminal on every call.
"""

import contextlib
import os
import re
import sys
import tempfile

# lines TensorFlow prints at start-up on every machine without a GPU (or with one, for the
# factory-registration lines); anything else captured is passed on
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub\.cc|cuda_platform\.cc.*cuInit|"
    r"Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"computation placer already registered|TF-TRT Warning|oneDNN custom operations are on|"
    r"This TensorFlow binary is optimized to use available CPU instructions|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler")


@contextlib.contextmanager
def captured_stderr():
    """Sends file descriptor 2 (this process's and its children's stderr, C++ logging
    included) to a temporary file; yields a function returning what was captured so far."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)

        def text():
            capture.flush()
            capture.seek(0)
            return capture.read().decode("utf-8", "replace")
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow():
    """Imports TensorFlow and lists its devices with the start-up noise left out (other lines
    are passed on to stderr). Call it before anything imports Keras or TensorFlow; once
    TensorFlow is imported it only returns it. Logical devices can still be configured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with captured_stderr() as text:
        import tensorflow as tf
        tf.config.list_physical_devices()
        captured = text()
    kept = [line for line in captured.splitlines() if line.strip()
            and not STARTUP_NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
    return tf


@contextlib.contextmanager
def quiet_subprocess_stderr():
    """Leaves out what subprocesses started in the block print to stderr (the Java tokenizer's
    progress lines); if the block fails, that output is printed, since it may explain why."""
    error, captured = None, ""
    with captured_stderr() as text:
        try:
            yield
        except BaseException as e:
            error, captured = e, text()
    if error is not None:
        if captured.strip():
            print(captured.rstrip(), file=sys.stderr)
        raise error

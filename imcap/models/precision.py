"""Building layers under a Keras dtype policy (mixed precision) without leaving it set."""

import contextlib

import keras

from imcap.models.config import DTYPE_POLICIES


@contextlib.contextmanager
def policy_scope(policy):
    """Layers created inside take ``policy`` (e.g. ``"mixed_bfloat16"``); the global policy is
    restored afterwards."""
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype policy must be one of {', '.join(DTYPE_POLICIES)}, "
                         f"got {policy!r}.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

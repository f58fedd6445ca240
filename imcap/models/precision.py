"""Building layers under a Keras dtype policy (mixed precision) without leaving it set."""

import contextlib

import keras

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def policy_scope(policy):
    """Layers created inside take ``policy`` (e.g. ``"mixed_bfloat16"``); the global policy is
    restored afterwards."""
    if policy not in POLICIES:
        raise ValueError(f"dtype policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

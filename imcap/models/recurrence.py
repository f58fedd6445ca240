"""Running a recurrent step over time: unrolled when the number of steps is known, as a loop
when it is not, with an optional padding mask."""

from keras import ops


def run_over_time(step, projected, keep, initial, num_outputs):
    """Applies ``step(carry, projected_t, keep_t) -> (carry, outputs)`` along axis 0.

    Args:
        step: one time step; ``keep_t`` is (batch, 1) bool or None, and ``outputs`` a tuple of
            ``num_outputs`` (batch, units) tensors.
        projected: the per-step inputs, time first.
        keep: (time, batch, 1) bool, False at padded steps, or None.
        initial: the first carry, a tuple of (batch, units) tensors.

    Returns:
        ``(sequences, carry)``: ``num_outputs`` tensors (batch, time, units) and the last carry.
    """
    if projected.shape[0] is not None:
        # a known number of steps (always, inside a traced training step): unrolled, which on
        # CPU is several times faster than a while loop, above all in the backward pass
        carry, steps = initial, []
        for t in range(projected.shape[0]):
            carry, outputs = step(carry, projected[t], None if keep is None else keep[t])
            steps.append(outputs)
        return [ops.stack(list(x), axis=1) for x in zip(*steps)], carry

    def body(carry, t):
        carry, outputs = step(carry, ops.take(projected, t, axis=0),
                              None if keep is None else ops.take(keep, t, axis=0))
        # Keras' scan stores as many outputs per step as the carry has tensors: pad with copies
        return carry, tuple(outputs) + (outputs[0],) * (len(carry) - len(outputs))

    times = ops.arange(ops.shape(projected)[0])
    carry, outputs = ops.scan(body, tuple(initial), times)
    # (time, batch, units) -> (batch, time, units)
    return [ops.transpose(x, (1, 0, 2)) for x in outputs[:num_outputs]], carry

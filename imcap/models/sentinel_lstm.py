"""The LSTM with a visual sentinel of Lu et al. (2017), eqs. 9-10."""

import keras
from keras import ops

from imcap.models.recurrence import run_over_time


@keras.saving.register_keras_serializable(package="imcap")
class SentinelLSTM(keras.layers.Layer):
    """An LSTM that also emits the visual sentinel s_t (Lu et al. 2017, eqs. 9-10).

        i, f, o = sigmoid(x_t W_{i,f,o} + h_{t-1} U_{i,f,o} + b_{i,f,o})
        m_t = f * m_{t-1} + i * tanh(x_t W_c + h_{t-1} U_c + b_c),  h_t = o * tanh(m_t)
        g_t = sigmoid(x_t W_g + h_{t-1} U_g + b_g),                 s_t = g_t * tanh(m_t)

    Weights as ``keras.layers.LSTM``'s: ``kernel`` (input, 4 units), ``recurrent_kernel`` (units,
    4 units), ``bias`` (4 units), gates i, f, c, o; with ``use_sentinel`` also the sentinel
    gate's ``sentinel_kernel``, ``sentinel_recurrent_kernel``, ``sentinel_bias``. Without it the
    layer is a plain LSTM, as imcap_keras' ``LSTM_sent(sentinel=False)``: no sentinel weights, no
    s_t. Gates are sigmoids (the paper; imcap_keras used hard_sigmoid).

    x W of all steps is one product before the recurrence. The input may come in two parts,
    ``[sequence, constant]``: (batch, time, d1) and a per-sequence (batch, d2) joined to every
    step (the captioner's v^g), whose projection is computed once.

    Recurrent dropout draws one mask of h_{t-1} per gate (4, or 5 with the sentinel), once per
    sequence, as imcap_keras' layer does (``layers/lstm_sent.py``, ``B_U``); only in
    training (imcap_keras also dropped h_{t-1} when decoding, a bug not kept).

    Args:
        units: size of h_t, m_t and s_t.
        dropout: fraction of the input units dropped (one mask per sequence, all steps and
            gates). imcap_keras' ``dropout_W`` never took effect (Keras 1's ``consume_less='cpu'``
            path ignored it); the captioner leaves this at 0.
        recurrent_dropout: fraction of h_{t-1} units dropped before U (one mask per gate and
            sequence).
        use_sentinel: add the sentinel gate and return s_t.
        unit_forget_bias: initialise the forget-gate bias to 1, as keras.layers.LSTM.
        kernel_initializer, recurrent_initializer, bias_initializer: as keras.layers.LSTM; the
            sentinel gate's weights use the same ones.

    Call arguments:
        inputs: a (batch, time, d) sequence, or ``[sequence, constant]`` as above.
        mask: optional boolean (batch, time); at a False step the state is carried unchanged
            and the outputs are zero.
        training: whether dropout is applied.
        initial_state: optional ``[h_0, m_0]``, each (batch, units); zeros by default.

    Returns:
        ``(h, s, [h_T, m_T])`` with the sentinel, ``(h, [h_T, m_T])`` without: hidden states
        and sentinels (batch, time, units), and the final state.
    """

    def __init__(self, units, dropout=0.0, recurrent_dropout=0.0, use_sentinel=True,
                 unit_forget_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"units must be a positive integer, got {units}.")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        self.units = units
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.use_sentinel = use_sentinel
        self.unit_forget_bias = unit_forget_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed_generator = keras.random.SeedGenerator(seed=None)
        self.supports_masking = True

    @property
    def gates(self):
        """4 (i, f, c, o), or 5 with the sentinel gate g."""
        return 5 if self.use_sentinel else 4

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            input_dim = input_shape[0][-1] + input_shape[1][-1]
        else:
            input_dim = input_shape[-1]
        units = self.units
        self.kernel = self.add_weight(name="kernel", shape=(input_dim, 4 * units),
                                      initializer=self.kernel_initializer)
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(units, 4 * units),
                                                initializer=self.recurrent_initializer)
        if self.unit_forget_bias:
            bias_initializer = self.bias_initializer

            def initializer(shape, dtype=None):
                return ops.concatenate([bias_initializer((units,), dtype=dtype),
                                        ops.ones((units,), dtype=dtype),
                                        bias_initializer((2 * units,), dtype=dtype)])
        else:
            initializer = self.bias_initializer
        self.bias = self.add_weight(name="bias", shape=(4 * units,), initializer=initializer)
        if self.use_sentinel:
            self.sentinel_kernel = self.add_weight(
                name="sentinel_kernel", shape=(input_dim, units),
                initializer=self.kernel_initializer)
            self.sentinel_recurrent_kernel = self.add_weight(
                name="sentinel_recurrent_kernel", shape=(units, units),
                initializer=self.recurrent_initializer)
            self.sentinel_bias = self.add_weight(name="sentinel_bias", shape=(units,),
                                                 initializer=self.bias_initializer)
        self.built = True

    # --- the two halves of a step, shared by the full-sequence call and step() -----------------

    def _input_kernel(self):
        if not self.use_sentinel:
            return self.kernel
        return ops.concatenate([self.kernel, self.sentinel_kernel], axis=1)  # (input, 5 units)

    def recurrent_kernel_all(self):
        """U of the four gates and the sentinel gate side by side: (units, gates x units)."""
        kernel = self.recurrent_kernel
        if self.use_sentinel:
            kernel = ops.concatenate([kernel, self.sentinel_recurrent_kernel], axis=1)
        return ops.cast(kernel, self.compute_dtype)

    def _input_bias(self):
        if not self.use_sentinel:
            return self.bias
        return ops.concatenate([self.bias, self.sentinel_bias])

    def project_sequence(self, sequence, input_mask=None, bias=True):
        """x W (+ b) of every step, (batch, time, gates x units), of a (batch, time, d1) sequence.

        ``input_mask`` is the dropout mask (batch, d1 [+ d2]) or None; ``bias=False`` leaves
        the bias to ``project_constant``.
        """
        d1 = sequence.shape[-1]
        kernel = ops.cast(self._input_kernel()[:d1], self.compute_dtype)
        if input_mask is not None:
            sequence = sequence * ops.expand_dims(input_mask[:, :d1], 1)
        projected = ops.matmul(sequence, kernel)
        if bias:
            projected = projected + ops.cast(self._input_bias(), self.compute_dtype)
        return projected

    def project_constant(self, constant, input_mask=None):
        """The per-sequence part of x W, and the bias: (batch, gates x units) from a (batch, d2)
        constant input.

        Computed once per sequence (once per image when decoding), not once per step.
        """
        d2 = constant.shape[-1]
        kernel = ops.cast(self._input_kernel()[-d2:], self.compute_dtype)
        if input_mask is not None:
            constant = constant * input_mask[:, -d2:]
        return ops.matmul(ops.cast(constant, self.compute_dtype), kernel) \
            + ops.cast(self._input_bias(), self.compute_dtype)

    def recurrence(self, projected_t, h, m, kernel):
        """One step without dropout from the projected input (batch, gates x units), the state
        and the recurrent kernel (units, gates x units, from ``recurrent_kernel_all``):
        returns (h, s, m), s None without the sentinel."""
        z = projected_t + ops.matmul(h, kernel)
        return self._gates(ops.split(z, self.gates, axis=-1), m)

    def masked_recurrence(self, projected_t, h, m, kernel, recurrent_masks):
        """One step with recurrent dropout, gate-major: ``projected_t`` (gates, batch, units),
        ``kernel`` (gates, units, units) and ``recurrent_masks`` (gates, batch, units), one
        dropout mask of h_{t-1} per gate. One batched product per step and no transposes
        (the einsum of the (batch, gates, units) layout made a training step 25% slower)."""
        z = projected_t + ops.matmul(ops.expand_dims(h, 0) * recurrent_masks, kernel)
        return self._gates(ops.unstack(z, self.gates, axis=0), m)

    def _gates(self, z, m):
        """(h, s, m) from the pre-activations z = x W + h U + b, one (batch, units) tensor per
        gate in the order i, f, c, o[, g], and m_{t-1}; s is None without the sentinel."""
        i, f, candidate, o = z[:4]
        i, f, o = ops.sigmoid(i), ops.sigmoid(f), ops.sigmoid(o)
        m = f * m + i * ops.tanh(candidate)
        tanh_m = ops.tanh(m)
        return o * tanh_m, ops.sigmoid(z[4]) * tanh_m if self.use_sentinel else None, m

    def _dropout_masks(self, batch, input_dim, training):
        input_mask = recurrent_masks = None
        if training and self.dropout > 0:
            input_mask = keras.random.dropout(ops.ones((batch, input_dim), self.compute_dtype),
                                              self.dropout, seed=self.seed_generator)
        if training and self.recurrent_dropout > 0:
            recurrent_masks = keras.random.dropout(
                ops.ones((batch, self.gates, self.units), self.compute_dtype),
                self.recurrent_dropout, seed=self.seed_generator)
        return input_mask, recurrent_masks

    # --- the full sequence -----------------------------------------------------------------------

    def call(self, inputs, mask=None, training=None, initial_state=None):
        sequence, constant = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) \
            else (inputs, None)
        if isinstance(mask, (list, tuple)):  # Keras passes one mask per input; the sequence's
            mask = mask[0]
        batch = ops.shape(sequence)[0]
        input_dim = self.kernel.shape[0]
        input_mask, recurrent_masks = self._dropout_masks(batch, input_dim, training)
        projected = self.project_sequence(sequence, input_mask, bias=constant is None)
        if constant is not None:
            projected = projected + ops.expand_dims(self.project_constant(constant, input_mask), 1)
        kernel = self.recurrent_kernel_all()  # once, not once per step
        if recurrent_masks is None:
            projected = ops.transpose(projected, (1, 0, 2))  # (time, batch, gates x units)
            recurrence = self.recurrence
        else:
            # gate-major, once for all steps: (time, gates, batch, units), (gates, units,
            # units) and (gates, batch, units)
            shape = ops.shape(projected)
            projected = ops.transpose(
                ops.reshape(projected, (shape[0], shape[1], self.gates, self.units)),
                (1, 2, 0, 3))
            kernel = ops.transpose(ops.reshape(kernel, (self.units, self.gates, self.units)),
                                   (1, 0, 2))
            masks = ops.transpose(recurrent_masks, (1, 0, 2))

            def recurrence(projected_t, h, m, kernel):
                return self.masked_recurrence(projected_t, h, m, kernel, masks)
        if initial_state is None:
            zeros = ops.zeros((batch, self.units), self.compute_dtype)
            initial_state = [zeros, zeros]
        h0, m0 = (ops.cast(t, self.compute_dtype) for t in initial_state)

        keep = None
        if mask is not None:
            keep = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)

        def step(carry, projected_t, keep_t):
            """-> (new carry, outputs): (h,) or (h, s) at this step."""
            h, s, m = recurrence(projected_t, carry[0], carry[1], kernel)
            outputs = (h,) if s is None else (h, s)
            if keep_t is None:
                return (h, m), outputs
            return ((ops.where(keep_t, h, carry[0]), ops.where(keep_t, m, carry[1])),
                    tuple(ops.where(keep_t, x, ops.zeros_like(x)) for x in outputs))

        sequences, carry = run_over_time(step, projected, keep, (h0, m0),
                                         2 if self.use_sentinel else 1)
        return (*sequences, list(carry))

    def step_weights(self, input_dim):
        """What ``step`` uses, joined and cast once (per decode, not per step), for a per-step
        input of ``input_dim`` features: the input and recurrent kernels stacked into one
        (input_dim + units, gates x units), and the bias."""
        kernel = ops.concatenate([ops.cast(self._input_kernel()[:input_dim], self.compute_dtype),
                                  self.recurrent_kernel_all()], axis=0)
        return {"kernel": kernel, "bias": ops.cast(self._input_bias(), self.compute_dtype)}

    def step(self, x_t, state, projected_constant=None, weights=None):
        """One decoding step (no dropout): x_t (batch, d1), state ``[h, m]``, and the output of
        ``project_constant`` (bias included) if the layer takes a constant ->
        ``(h_t, s_t, [h_t, m_t])`` (s_t None without the sentinel). ``weights`` is
        ``step_weights(d1)``, computed here when not given.

        One matrix product [x_t; h_{t-1}] [W; U] and one addition per step. Inside a decoding
        loop, the three same-shaped terms x W + h U + c of the unfused form become an AddN that
        Grappler's memory optimizer, on large graphs (ResNet-50 at 224 px and 8 images), turns
        into a TemporaryVariable; at the loop's exit that variable is created and never
        destroyed, and the next call of the same function fails with AlreadyExistsError.
        """
        if weights is None:
            weights = self.step_weights(x_t.shape[-1])
        h, m = (ops.cast(t, self.compute_dtype) for t in state)
        inputs = ops.concatenate([ops.cast(x_t, self.compute_dtype), h], axis=-1)
        offset = weights["bias"] if projected_constant is None else projected_constant
        z = ops.matmul(inputs, weights["kernel"]) + offset
        h, s, m = self._gates(ops.split(z, self.gates, axis=-1), m)
        return h, s, [h, m]

    def compute_mask(self, inputs, mask=None):
        return None  # the mask is applied here; the outputs are zero at padded steps

    def compute_output_spec(self, inputs, mask=None, training=None, initial_state=None):
        sequence = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        batch, time = sequence.shape[0], sequence.shape[1]
        def spec(*shape):  # one object per output: functional models map outputs by object
            return keras.KerasTensor(shape, dtype=self.compute_dtype)

        states = [spec(batch, self.units), spec(batch, self.units)]
        if not self.use_sentinel:
            return spec(batch, time, self.units), states
        return spec(batch, time, self.units), spec(batch, time, self.units), states

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "use_sentinel": self.use_sentinel,
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config

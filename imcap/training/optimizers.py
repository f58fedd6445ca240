"""imcap_keras' optimizers, with per-variable learning-rate multipliers (``--lrmults``).

imcap_keras needed a forked Keras 1 for ``-lrmult_conv`` (each layer's
``W_learning_rate_multiplier``). Keras 3 optimizers call
``update_step(gradient, variable, learning_rate)`` once per variable, so a subclass that
multiplies ``learning_rate`` there scales that variable's update exactly, for every optimizer,
under gradient accumulation and under ``tf.distribute`` alike. Scaling the gradient instead
would not do: Adam, RMSprop and Adadelta are invariant to the gradient's scale.
"""

import keras

OPTIMIZERS = {"adam": keras.optimizers.Adam, "SGD": keras.optimizers.SGD,
              "adadelta": keras.optimizers.Adadelta, "adagrad": keras.optimizers.Adagrad,
              "rmsprop": keras.optimizers.RMSprop}


class _LearningRateMultipliers:
    """Mixin: the variables whose ``path`` is in ``multiplied_paths`` are updated with the
    learning rate times ``lr_multiplier``; the others with the learning rate itself."""

    def __init__(self, *args, lr_multiplier=1.0, multiplied_paths=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multiplier = float(lr_multiplier)
        self.multiplied_paths = sorted(multiplied_paths)
        self._multipliers = []

    def build(self, variables):
        super().build(variables)
        paths = set(self.multiplied_paths)
        self._multipliers = [self.lr_multiplier if v.path in paths else 1.0 for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier,
                "multiplied_paths": list(self.multiplied_paths)}


def _multiplier_class(base):
    cls = type(f"LrMult{base.__name__}", (_LearningRateMultipliers, base),
               {"__doc__": f"Keras' {base.__name__} with learning-rate multipliers."})
    return keras.saving.register_keras_serializable(package="imcap")(cls)


MULTIPLIER_OPTIMIZERS = {name: _multiplier_class(base) for name, base in OPTIMIZERS.items()}


def make_optimizer(name, learning_rate, beta_1=0.9, beta_2=0.999, clipvalue=None, decay=0.0,
                   accumulation_steps=1, lr_multiplier=None, multiplied_variables=()):
    """The optimizer ``name`` (imcap_keras' ``-optim``) with value clipping, Keras 1 decay
    (``lr / (1 + decay * iterations)``), gradient accumulation over ``accumulation_steps``
    batches, and ``lr_multiplier`` applied to ``multiplied_variables`` when given."""
    if decay > 0:
        learning_rate = keras.optimizers.schedules.InverseTimeDecay(learning_rate, 1, decay)
    kwargs = {"learning_rate": learning_rate, "clipvalue": clipvalue}
    if accumulation_steps > 1:
        kwargs["gradient_accumulation_steps"] = accumulation_steps
    if name == "adam":
        kwargs.update(beta_1=beta_1, beta_2=beta_2)
    if lr_multiplier is None:
        return OPTIMIZERS[name](**kwargs)
    return MULTIPLIER_OPTIMIZERS[name](lr_multiplier=lr_multiplier,
                                       multiplied_paths=[v.path for v in multiplied_variables],
                                       **kwargs)

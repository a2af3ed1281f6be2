"""PaperSGD: the update rule of the 2012 paper (section 5), momentum with the weight decay inside the velocity."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.Optimizer):
    """Momentum SGD with coupled L2 weight decay, exactly as Krizhevsky et al. (2012) write it:

    ```python
    velocity = momentum * velocity - weight_decay * learning_rate * w - learning_rate * gradient
    w = w + velocity
    ```

    The decay acts on kernels only (variables of rank >= 2); biases are not decayed, as in Krizhevsky's
    cuda-convnet configuration. This is *not* Keras' `SGD(weight_decay=...)`, which decays every variable
    (biases included) outside the momentum, decoupled from the gradient.

    Args:
        learning_rate: a float or a `LearningRateSchedule` (paper: 0.01, divided by 10 on plateaus).
        momentum: the velocity's decay (paper: 0.9).
        weight_decay: the coupled L2 coefficient (paper: 0.0005).
        **kwargs: the base optimizer's keyword arguments (`clipnorm`, `loss_scale_factor`, ...), except
            `weight_decay`'s decoupled form, which this optimizer replaces.

    Example:

    >>> optimizer = PaperSGD()
    >>> model.compile(optimizer=optimizer)
    """

    def __init__(
        self,
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        name: str = "paper_sgd",
        **kwargs,
    ):
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if float(weight_decay) < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if isinstance(learning_rate, (int, float)) and learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        # The base class' `weight_decay` is the decoupled kind: keep it off and hold our own coefficient.
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")

    @staticmethod
    def decays(variable) -> bool:
        """Whether the paper's weight decay applies: kernels (rank >= 2) yes, biases no."""
        return len(variable.shape) >= 2

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        step = ops.multiply(gradient, learning_rate)
        if self.coupled_weight_decay and self.decays(variable):
            step = ops.add(step, ops.multiply(variable, ops.multiply(learning_rate, self.coupled_weight_decay)))
        self.assign(velocity, ops.subtract(ops.multiply(velocity, self.momentum), step))
        self.assign_add(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay})
        return config

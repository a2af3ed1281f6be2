"""The 2012 two-tower AlexNet with Local Response Normalization, as a Keras functional model."""

from __future__ import annotations

import contextlib
import pathlib
import re
from collections.abc import Sequence

import keras
import tensorflow as tf

from alexnet_tf.network import placement
from alexnet_tf.network.layers import (
    CrossTowerLocalResponseNormalization,
    LocalResponseNormalization,
    OverlappingMaxPooling2D,
)
from alexnet_tf.network.metrics import TopKError
from alexnet_tf.network.optimizer import PaperSGD
from alexnet_tf.network.training_forms import TrainingForms

IMAGE_SIZE = 224
"""Side of the square crops the paper's network sees (section 4.1)."""

VARIANTS = {"paper": 224, "caffe": 227}
"""Architecture variants and their input sides. "paper": 224 crops zero-padded by 2, LRN within each tower.
"caffe": Caffe's bvlc_alexnet, 227 crops with no padding and LRN across both towers' channels (conv1, conv2)."""

PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
"""The eight learned layers, in order; every Keras layer's name starts with one of these."""

PAPER_PARAMETERS = {
    "conv1": 34_944,
    "conv2": 307_456,
    "conv3": 885_120,
    "conv4": 663_936,
    "conv5": 442_624,
    "fc6": 37_752_832,
    "fc7": 16_781_312,
    "fc8": 4_097_000,
}
"""Parameters per paper layer for 1000 classes; they sum to 60,965,224."""

LRN_VARIANTS = {
    # The paper's text: k=2, n=5, alpha=1e-4, beta=0.75, alpha not divided by n.
    "paper": {"depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75},
    # Krizhevsky's cuda-convnet layers.cfg said scale=1e-4 but the code divides it by the window size.
    "cuda-convnet": {"depth_radius": 2, "bias": 2.0, "alpha": 1e-4 / 5, "beta": 0.75},
    # Caffe's bvlc_alexnet: k=1 and alpha divided by the window size.
    "caffe": {"depth_radius": 2, "bias": 1.0, "alpha": 1e-4 / 5, "beta": 0.75},
}

INITS = ("paper", "he", "caffe")

# Layers whose bias the paper initialises to 1 ("accelerates the early stages of learning", section 5).
_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")
_TOWERS = ("a", "b")


def _initializers(layer: str, init: str) -> dict:
    """Kernel and bias initializers for one paper layer under an init scheme."""
    if init == "paper":
        kernel = keras.initializers.RandomNormal(stddev=0.01)
        bias = 1.0 if layer in _BIAS_ONE else 0.0
    elif init == "he":
        # He-normal for the ReLU layers; the linear classifier starts small so the first softmax is near uniform
        # (a He-scaled fc8 starts with logits of std ~1.5 and large, disruptive first gradients).
        kernel = keras.initializers.RandomNormal(stddev=0.01) if layer == "fc8" else keras.initializers.HeNormal()
        bias = 0.0
    elif init == "caffe":
        kernel = keras.initializers.RandomNormal(stddev=0.005 if layer in ("fc6", "fc7") else 0.01)
        bias = 0.1 if layer in _BIAS_ONE else 0.0
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return {"kernel_initializer": kernel, "bias_initializer": keras.initializers.Constant(bias)}


@keras.saving.register_keras_serializable(package="alexnet_tf")
class AlexNet(keras.Model):
    """The two-tower network of Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep
    Convolutional Neural Networks", Figure 2: the 2012 original with LRN and overlapping pooling (not the
    single-tower "one weird trick" variant that torchvision ships).

    conv2, conv4 and conv5 see only their own tower's maps; conv3, fc6, fc7 and fc8 see both towers. The towers
    are separate tensors throughout, so LRN never mixes channels across them. The 224x224 input is zero-padded
    by 2 on each side so that conv1 gives the paper's 55x55 maps. The "caffe" variant computes as Caffe's
    bvlc_alexnet does, so its published weights give its published accuracy: 227x227 input with no padding
    (also 55x55), and LRN after conv1 and conv2 over both towers' channels (Caffe's LRN does not see groups).

    Args:
        num_classes: width of fc8.
        tower_devices: `None`, or two device strings; each tower's ops run on its device whenever the model is
            called, including inside a traced `tf.function` (see `alexnet_tf.network.placement`).
        dropout: dropout rate after fc6 and fc7 (paper: 0.5).
        init: "paper" (weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7), "he" (He-normal
            weights, fc8 N(0, 0.01), zero biases) or "caffe" (bvlc_alexnet: biases 0.1, fc6/fc7 std 0.005).
            The paper's init is
            known to stall from scratch in reimplementations (Caffe moved to 0.1 biases, tensorpack to He init);
            it stays the default for faithfulness.
        lrn: one of `LRN_VARIANTS`: "paper" (default), "cuda-convnet" or "caffe".
        variant: one of `VARIANTS`: "paper" (default) or "caffe" (input side and LRN span, above).
        input_scale: multiplies the mean-subtracted input before conv1 (1.0 in the paper; the demo preset
            uses about 1/64 so that He init starts at unit scale).
        dtype: a Keras dtype policy name for the layers (e.g. "mixed_bfloat16"); LRN and fc8 compute in float32,
            so the logits are float32 whatever the policy.

    Call arguments:
        inputs: float32 `(batch, S, S, 3)` mean-subtracted RGB pixels, S = `image_size` (224, or 227 for
            the caffe variant).
        training: enables dropout.

    Example:

    >>> model = AlexNet(num_classes=10)
    >>> model(np.zeros((2, 224, 224, 3), "float32")).shape
    TensorShape([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        tower_devices: Sequence[str] | None = None,
        dropout: float = 0.5,
        init: str = "paper",
        lrn: str = "paper",
        variant: str = "paper",
        input_scale: float = 1.0,
        dtype: str | None = None,
        name: str = "alexnet",
        **kwargs,
    ):
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if lrn not in LRN_VARIANTS:
            raise ValueError(f"lrn must be one of {tuple(LRN_VARIANTS)}, got {lrn!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
        _initializers("conv1", init)  # validates init
        tower_devices = placement.validate(tower_devices)

        # === Layers ===
        def on(tower):  # builds the tower's variables on its device
            return tf.device(tower_devices[_TOWERS.index(tower)]) if tower_devices else contextlib.nullcontext()

        def conv(paper_name, tower, filters, size, **conv_kwargs):
            return keras.layers.Conv2D(
                filters, size, activation="relu", name=f"{paper_name}_{tower}", dtype=dtype,
                **_initializers(paper_name, init), **conv_kwargs,
            )

        def dense(paper_name, tower, units):
            return keras.layers.Dense(
                units, activation="relu", name=f"{paper_name}_{tower}", dtype=dtype, **_initializers(paper_name, init)
            )

        def lrn_pool(paper_name, towers):  # LRN then pooling, per tower (paper) or LRN across towers (caffe)
            if variant == "caffe":
                towers = CrossTowerLocalResponseNormalization(
                    **LRN_VARIANTS[lrn], name=f"{paper_name}_lrn", dtype=dtype)(towers)
            else:
                towers = [LocalResponseNormalization(**LRN_VARIANTS[lrn], name=f"{paper_name}_{t}_lrn", dtype=dtype)(x)
                          for t, x in zip(_TOWERS, towers)]
            return [OverlappingMaxPooling2D(3, 2, name=f"{paper_name}_{t}_pool", dtype=dtype)(x)
                    for t, x in zip(_TOWERS, towers)]

        def concat(paper_name, tensors):
            return keras.layers.Concatenate(name=f"{paper_name}_input", dtype=dtype)(tensors)

        # === Functional Model ===
        size = VARIANTS[variant]
        images = keras.Input((size, size, 3), name="images")
        x = images
        if input_scale != 1.0:
            x = keras.layers.Rescaling(input_scale, name="conv1_scale", dtype=dtype)(x)
        if variant == "paper":
            x = keras.layers.ZeroPadding2D(2, name="conv1_pad", dtype=dtype)(x)  # 224 -> 228: conv1 gives 55x55

        def conv_on(paper_name, inputs, filters, size, **conv_kwargs):  # one convolution per tower
            outputs = []
            for t, x in zip(_TOWERS, inputs):
                with on(t):
                    outputs.append(conv(paper_name, t, filters, size, **conv_kwargs)(x))
            return outputs

        def upper_tower(t, both):  # conv3 reads both towers; conv4 and conv5 only their own
            with on(t):
                x = conv("conv3", t, 192, 3, padding="same")(both)
                x = conv("conv4", t, 192, 3, padding="same")(x)
                x = conv("conv5", t, 128, 3, padding="same")(x)
                x = OverlappingMaxPooling2D(3, 2, name=f"conv5_{t}_pool", dtype=dtype)(x)
                return keras.layers.Flatten(name=f"conv5_{t}_flatten", dtype=dtype)(x)  # 6*6*128

        def fully_connected(paper_name, t, both):
            with on(t):
                x = dense(paper_name, t, 2048)(both)
                return keras.layers.Dropout(dropout, name=f"{paper_name}_{t}_dropout", dtype=dtype)(x)

        towers = lrn_pool("conv1", conv_on("conv1", [x, x], 48, 11, strides=4))  # 27x27x48 each
        towers = lrn_pool("conv2", conv_on("conv2", towers, 128, 5, padding="same"))  # 13x13x128 each
        both = concat("conv3", towers)  # 13x13x256: conv3 is where the towers talk
        towers = [upper_tower(t, both) for t in _TOWERS]
        for paper_name in ("fc6", "fc7"):
            both = concat(paper_name, towers)
            towers = [fully_connected(paper_name, t, both) for t in _TOWERS]
        logits = keras.layers.Dense(
            num_classes, name="fc8", dtype="float32", **_initializers("fc8", init)
        )(concat("fc8", towers))
        super().__init__(images, logits, name=name, dtype=dtype, **kwargs)

        # === Config ===
        self.num_classes = int(num_classes)
        self.tower_devices = tower_devices
        self.dropout = float(dropout)
        self.init = init
        self.lrn = lrn
        self.variant = variant
        self.input_scale = float(input_scale)
        self._layer_dtype = dtype
        self._placement_enabled = True
        self.training_forms: TrainingForms | None = None

    @property
    def image_size(self) -> int:
        """Side of the square crops this network takes (224; 227 for the caffe variant)."""
        return VARIANTS[self.variant]

    def tower_of(self, layer_name: str) -> int | None:
        """0 or 1 for a layer that belongs to tower A or B (name ends in `_a`/`_b`, before any suffix), else None."""
        parts = layer_name.split("_")
        if len(parts) >= 2 and parts[0] in PAPER_LAYERS and parts[1] in _TOWERS:
            return _TOWERS.index(parts[1])
        return None

    @contextlib.contextmanager
    def without_placement(self):
        """Run calls inside this block with no device annotations (exports must load on any single-device host)."""
        previous, self._placement_enabled = self._placement_enabled, False
        try:
            yield self
        finally:
            self._placement_enabled = previous

    def call(self, inputs, training=None, mask=None):
        placed = self.tower_devices is not None and self._placement_enabled
        forms = self.training_forms if training else None
        if not placed and not forms:
            return super().call(inputs, training=training, mask=mask)
        # Keras 3 re-runs every layer at call time, so device scopes set while building would be lost inside a
        # traced train step or export: apply them here, around each layer's call. `training` reaches Dropout
        # through Keras' call context, which the outer `__call__` has already set.
        devices = self.tower_devices

        def operation_fn(operation):
            run = (forms.substitute(operation) if forms else None) or operation
            tower = self.tower_of(operation.name)
            if not placed or tower is None:
                return run

            def run_placed(*args, **kwargs):
                with tf.device(devices[tower]):
                    return run(*args, **kwargs)

            return run_placed

        return self._run_through_graph(self._standardize_inputs(inputs), operation_fn=operation_fn)

    def _gradient_device(self, operation) -> str:
        """Device for a gradient op: its forward layer's tower device, read from the op's name scope."""
        for scope in operation.name.split("/"):
            tower = self.tower_of(re.sub(r"_\d+$", "", scope))
            if tower is not None:
                return self.tower_devices[tower]
        return ""

    @contextlib.contextmanager
    def _placed_gradients(self):
        """Put the backward ops of each tower on the tower's device, as TF1's colocate_gradients_with_ops did.

        TF2's tape creates gradient ops with no device, so inside a traced step they would all land on the
        default device; a device *function* on the graph assigns each one as it is created.
        """
        if self.tower_devices is None or not self._placement_enabled or tf.executing_eagerly():
            yield
            return
        with tf.compat.v1.get_default_graph().device(self._gradient_device):
            yield

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Compile with the paper's defaults: PaperSGD, softmax cross-entropy on logits, top-1/top-5 error.

        With `jit_compile=True` the pooling and LRN layers train with their XLA forms (`alexnet_tf.network.xla_forms`).
        Without it, conv1 and conv2 train in the forms of `alexnet_tf.network.training_forms` (the ReLU inside
        the native LRN op; in bfloat16 on an AMX CPU, conv1 over 4x4 blocks); assign `training_forms` after
        compiling to choose yourself.
        """
        super().compile(
            optimizer=optimizer if optimizer is not None else PaperSGD(),
            loss=loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=metrics if metrics is not None else [TopKError(1), TopKError(5)],
            **kwargs,
        )
        for layer in self.layers:
            if isinstance(layer, (OverlappingMaxPooling2D, LocalResponseNormalization)):
                layer.use_xla_form = self.jit_compile is True
        self.training_forms = TrainingForms.for_step(self.compute_dtype, xla=self.jit_compile is True)

    def compile_from_config(self, config):
        """Recompile a loaded model as it was saved (optimizer, its slots, loss, metrics, jit_compile)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so the saved optimizer variables have a home

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras 3.15 builds metrics from a batch by `strategy.reduce`-ing the whole (x, y) nest, which
        MultiWorkerMirroredStrategy rejects; only shapes matter, so build from one replica's local batch."""
        if self._distribute_strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        local = tf.nest.map_structure(
            lambda v: self.distribute_strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v,
            batch,
        )
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=local)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # Forward pass with dropout; Keras' loss divides by the number of replicas under a strategy.
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight, training=True)
            # Loss scaling for float16 (a LossScaleOptimizer scales here and unscales in apply); identity otherwise.
            scaled_loss = self.optimizer.scale_loss(loss)
        # Backward pass, each tower's gradients on the tower's device.
        with self._placed_gradients():
            gradients = tape.gradient(scaled_loss, self.trainable_variables)
        # The paper's update rule lives in the optimizer (PaperSGD by default); schedules live in callbacks.
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(loss, y, logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(x, training=False)
        loss = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight, training=False)
        return self._update_metrics(loss, y, logits, sample_weight)

    def _update_metrics(self, loss, y, logits, sample_weight):
        """Feed the loss tracker (per-replica loss back to a global mean) and the compiled error metrics."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=tf.shape(logits)[0])
            else:
                metric.update_state(y, logits, sample_weight=sample_weight)
        results = self.get_metrics_result()
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 averages multi-worker results with `strategy.reduce("MEAN", v, axis=0)`, which needs an
            # axis: give it one, and every worker logs (and schedules on) the same global mean.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "tower_devices": list(self.tower_devices) if self.tower_devices else None,
            "dropout": self.dropout,
            "init": self.init,
            "lrn": self.lrn,
            "variant": self.variant,
            "input_scale": self.input_scale,
            "dtype": self._layer_dtype,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_alexnet(
    num_classes: int = 1000,
    *,
    tower_devices: Sequence[str] | None = None,
    dropout: float = 0.5,
    init: str = "paper",
    lrn: str = "paper",
    variant: str = "paper",
    input_scale: float = 1.0,
    dtype: str | None = None,
) -> AlexNet:
    """Build the paper's two-tower network; see `AlexNet` for the arguments. Returns logits, not softmax."""
    return AlexNet(
        num_classes,
        tower_devices=tower_devices,
        dropout=dropout,
        init=init,
        lrn=lrn,
        variant=variant,
        input_scale=input_scale,
        dtype=dtype,
    )


def paper_layer_of(layer_name: str) -> str | None:
    """The paper layer ("conv1".."fc8") a Keras layer belongs to, from its name; None for the input."""
    head = layer_name.split("_")[0]
    return head if head in PAPER_LAYERS else None


def load_model(path, *, compile: bool = True) -> AlexNet:
    """Load a `.keras` file written by `AlexNet.save`, with this package's layers, optimizer and metrics registered
    (`compile=False`: the network and its weights only, no optimizer state)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    return keras.saving.load_model(path, compile=compile)

"""The paper's network, and everything a saved `.keras` file of it names.

    model         AlexNet (the two towers as a Keras functional model), build_alexnet, load_model, the paper's
                  layer names and parameter counts
    layers        LocalResponseNormalization (per tower), its cross-tower Caffe form, overlapping max pooling
    lrn           the LRN formula as TensorFlow ops with its gradient written out
    xla_forms     max pooling with a gradient that XLA compiles well on a CPU
    placement     which device each tower runs on
    optimizer     PaperSGD, the paper's update rule
    metrics       TopKError, the paper's top-1 / top-5 error
    summary       the layer table of `alexnet-tf summary`

PaperSGD and TopKError live here, not in `training/`, because `AlexNet.compile()` defaults to them and every
`.keras` file the package writes names them in its compile config: loading a model must not need the fit loop.
Nothing here imports another part of alexnet_tf.
"""

from alexnet_tf.network.layers import LocalResponseNormalization
from alexnet_tf.network.metrics import TopKError
from alexnet_tf.network.model import AlexNet, build_alexnet, load_model
from alexnet_tf.network.optimizer import PaperSGD

__all__ = ["AlexNet", "LocalResponseNormalization", "PaperSGD", "TopKError", "build_alexnet", "load_model"]

"""alexnet-tf: the 2012 two-tower AlexNet on TensorFlow 2 / Keras 3, from training to TF Serving.

The public names are imported lazily (PEP 562), so `alexnet-tf --help` does not wait for TensorFlow. Importing
the package sets TensorFlow's runtime defaults for fast CPU training (`alexnet_tf.process.runtime`) unless TensorFlow is
already imported or the user set them.
"""

from __future__ import annotations

import importlib

from alexnet_tf.process import runtime

runtime.configure()

__version__ = "0.1.0"

_PUBLIC = {
    "AlexNet": "alexnet_tf.network.model",
    "ImageClassifier": "alexnet_tf.classifier",
    "build_alexnet": "alexnet_tf.network.model",
    "load_model": "alexnet_tf.network.model",
    "LocalResponseNormalization": "alexnet_tf.network.layers",
    "PaperSGD": "alexnet_tf.network.optimizer",
    "TopKError": "alexnet_tf.network.metrics",
    "placement": "alexnet_tf.network.placement",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    return module if module.__name__.endswith(f".{name}") else getattr(module, name)


def __dir__():
    return __all__ + ["__version__"]

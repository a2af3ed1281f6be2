"""alexnet-tf: the 2012 two-tower AlexNet on TensorFlow 2 / Keras 3, from training to TF Serving.

The public names are imported lazily (PEP 562), so `alexnet-tf --help` does not wait for TensorFlow. Importing
the package sets TensorFlow's runtime defaults for fast CPU training (`alexnet_tf.runtime`) unless TensorFlow is
already imported or the user set them.
"""

from __future__ import annotations

import importlib

from alexnet_tf import runtime

runtime.configure()

__version__ = "0.1.0"

_PUBLIC = {
    "AlexNet": "alexnet_tf.model",
    "build_alexnet": "alexnet_tf.model",
    "load_model": "alexnet_tf.model",
    "LocalResponseNormalization": "alexnet_tf.layers",
    "PaperSGD": "alexnet_tf.optimizer",
    "TopKError": "alexnet_tf.metrics",
    "placement": "alexnet_tf.placement",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    return module if module.__name__.endswith(f".{name}") else getattr(module, name)


def __dir__():
    return __all__ + ["__version__"]

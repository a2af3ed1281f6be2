"""Using a trained model without a server: `ImageClassifier` (Keras conventions: `from_preset`, `predict` on raw
images, `decode_predictions`, `features`, `save_to_preset`).

    image_classifier   ImageClassifier, ImageError
    test_time          the paper's test-time computation, shared with the exported signatures
    presets            run directories and preset directories on disk (PresetError)
"""

from alexnet_tf.classifier.image_classifier import ImageClassifier, ImageError
from alexnet_tf.classifier.presets import PresetError

__all__ = ["ImageClassifier", "ImageError", "PresetError"]

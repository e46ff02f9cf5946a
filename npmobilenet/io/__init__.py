"""Model files, framework weight readers and converters, preprocessing and class names."""

from .convert import Conversion, convert, convert_file, convert_state
from .keras_h5 import read_keras_h5, read_keras_weights
from .labels import class_names, imagenet_classes
from .model_file import load, load_training_state, save
from .preprocess import load_image, preprocess_image, preset
from .tf_checkpoint import open_checkpoint
from .torch_pickle import UnsafePickleError, read_torch_state_dict

__all__ = ["Conversion", "UnsafePickleError", "class_names", "convert", "convert_file",
           "convert_state", "imagenet_classes", "load", "load_image", "load_training_state",
           "open_checkpoint", "preprocess_image", "preset", "read_keras_h5", "read_keras_weights",
           "read_torch_state_dict", "save"]

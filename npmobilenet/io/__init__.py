"""Model files, framework weight readers and converters, preprocessing and class names."""

from .convert import convert_file, convert_state
from .keras_h5 import read_keras_h5
from .labels import class_names, imagenet_classes
from .model_file import load, load_training_state, save
from .preprocess import load_image, preprocess_image, preset
from .torch_pickle import UnsafePickleError, read_torch_state_dict

__all__ = ["UnsafePickleError", "class_names", "convert_file", "convert_state", "imagenet_classes",
           "load", "load_image", "load_training_state", "preprocess_image", "preset", "read_keras_h5",
           "read_torch_state_dict", "save"]

"""cxr: a reproducible, tracked pipeline for chest X-ray classification."""

import os

# TensorFlow's C++ start-up chatter (CPU features, oneDNN) buries the stages' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

"""cxr: a reproducible, tracked pipeline for chest X-ray classification."""

__version__ = "0.1.0"

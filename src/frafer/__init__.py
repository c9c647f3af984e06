"""frafer: FRA self-supervised pre-training and facial expression recognition."""

__version__ = "0.1.0"

"""al-backend: active learning for the labeling tools teams already use."""

__version__ = "0.1.0"

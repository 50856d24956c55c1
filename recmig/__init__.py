"""recmig: cross-domain interest transfer for recommendation with pretrained language models."""

__version__ = "0.1.0"

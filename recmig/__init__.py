"""recmig: cross-domain interest transfer for recommendation with pretrained language models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `recmig.Recommender` without importing torch and the data stack on `import recmig`.
    if name == "Recommender":
        from recmig.serving import Recommender

        return Recommender
    raise AttributeError(f"module 'recmig' has no attribute {name!r}")

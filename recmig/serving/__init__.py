"""Using a finished run: recommend, explain and update users (:class:`Recommender`), replay
held-out interactions as a stream and test explanations by deletion (:mod:`.analysis`), and
serve it all over HTTP (:mod:`.http`)."""

from recmig.serving.recommender import History, Recommender, RequestError, UnknownIdError

__all__ = ["History", "Recommender", "RequestError", "UnknownIdError"]

"""``recmig serve <run>``: the :class:`~recmig.serving.Recommender` API over HTTP.

    POST /recommend  {"user": "42", "k": 10}
                     {"source_history": ["Toy Story (1995)", {"item_id": "Heat (1995)",
                      "rating": 5}], "target_history": [], "k": 10}
    POST /explain    the same body, plus "per_item": causes per recommended item
    POST /update     {"user": "42", "item_id": "Heat (1995)", "timestamp": 977000000}
    GET  /health

FastAPI validates every body against the models below (a malformed one is a 422 naming the
field; ratings and timestamps must be finite) and documents them at ``/docs``; uvicorn serves
it. An unknown item id, or an unknown user on /recommend and /explain, is a 404 naming the id
(/update of an unknown user starts a new one); any other refused value (an item passed in the
wrong domain, k < 1) a 422; a bad request changes nothing, because :meth:`Recommender.update`
validates before it writes. Updates live in memory, one history per user.
Endpoints are plain functions, so FastAPI runs them in its thread pool and ``/health`` answers
while a long request is scored; the recommender's lock keeps updates consistent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from recmig.serving.recommender import Recommender, RequestError, UnknownIdError

MAX_HISTORY = 10_000
"""Longest history a request may carry (explaining costs one scoring pass per item)."""


class RatedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str | int
    rating: float | None = Field(None, allow_inf_nan=False)


Entry = str | int | RatedItem


class RecommendRequest(BaseModel):
    """Either ``user`` (a scenario user, or one created by /update) or histories."""

    model_config = ConfigDict(extra="forbid")
    user: str | int | None = None
    source_history: list[Entry] = Field(default_factory=list, max_length=MAX_HISTORY)
    target_history: list[Entry] = Field(default_factory=list, max_length=MAX_HISTORY)
    history: list[Entry] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="items of either domain, in time order",
    )
    k: int = Field(10, ge=1, le=1000)


class ExplainRequest(RecommendRequest):
    per_item: int = Field(3, ge=1, le=100, description="causes listed per recommended item")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | int
    item_id: str | int
    timestamp: float | None = Field(None, allow_inf_nan=False)
    rating: float | None = Field(None, allow_inf_nan=False)


def _entries(entries: list[Entry]) -> list:
    return [(e.item_id, e.rating) if isinstance(e, RatedItem) else e for e in entries]


def _arguments(body: RecommendRequest) -> dict:
    return {
        "user": body.user,
        "source_history": _entries(body.source_history),
        "target_history": _entries(body.target_history),
        "history": _entries(body.history),
        "k": body.k,
    }


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(title="recmig", description=f"recommendations of {recommender.name}")

    @app.exception_handler(RequestValidationError)
    def malformed(request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad input back, which fails for a non-finite number
        # (JSON has no Infinity): where and why is what a client needs.
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(UnknownIdError)
    def unknown_id(request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err)})

    @app.exception_handler(RequestError)  # only refusals: any other error is a 500
    def bad_value(request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(err)})

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "strategy": recommender.name,
            "target_items": len(recommender.catalog),
            "users": len(recommender.user_index),
        }

    @app.post("/recommend")
    def recommend(body: RecommendRequest) -> dict:
        return {"user": body.user, "items": recommender.recommend_list(**_arguments(body))}

    @app.post("/explain")
    def explain(body: ExplainRequest) -> dict:
        items = recommender.explain_list(**_arguments(body), per_item=body.per_item)
        return {"user": body.user, "items": items}

    @app.post("/update")
    def update(body: UpdateRequest) -> dict:
        history = recommender.update(body.user, body.item_id, body.timestamp, body.rating)
        target = sum(recommender.domain_name(t) == "target" for t in history.tokens)
        return {
            "user": str(body.user),
            "interactions": len(history.tokens),
            "target_interactions": target,
            "cold": target == 0,
        }

    return app


class BackgroundServer:
    """A real uvicorn server on localhost in a background thread (tests, the load test):
    ``with BackgroundServer(app) as url: ...``; port 0 picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (port in use?)")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app = create_app(Recommender.from_run(run_dir))
    uvicorn.run(app, host=host, port=port, log_level="info")

"""``recmig serve <run>``: the :class:`~recmig.serving.Recommender` API over HTTP.

    POST /recommend  {"user": "42", "k": 10}
                     {"source_history": ["Toy Story (1995)", {"item_id": "Heat (1995)",
                      "rating": 5}], "target_history": [], "k": 10}
    POST /explain    the same body, plus "per_item": causes per recommended item
    POST /update     {"user": "42", "item_id": "Matrix, The (1999)", "timestamp": 977000000}
    GET  /health

FastAPI validates every body against the models below (a malformed one is a 422 naming the
field; ratings and timestamps must be finite) and documents them at ``/docs``; uvicorn serves
it. An unknown item id, or an unknown user on /recommend and /explain, is a 404 naming the id
(/update of an unknown user starts a new one); any other refused value (an item passed in the
wrong domain, k < 1) a 422; a bad request changes nothing, because :meth:`Recommender.update`
validates before it writes. A body that is not UTF-8 JSON is a 422 too, one sent without
``Content-Type: application/json`` a 415, one over ``MAX_BODY_BYTES`` a 413 (read no further);
error messages echo at most 80 characters of a value (``recommender.shown``).

A history that gives the strategy nothing to score by (empty, or without an item it reads) gets
the target domain's popularity, and the answer's ``fallback`` says so (null otherwise).
``recmig serve`` keeps acknowledged updates in a journal (:mod:`recmig.serving.journal`) before
answering 200, and ``/health`` reports it and the users held in memory.
Endpoints are plain functions, so FastAPI runs them in its thread pool and ``/health`` answers
while a long request is scored; the recommender's lock keeps updates consistent.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recmig.serving.recommender import Recommender, RequestError, UnknownIdError, shown

MAX_HISTORY = 10_000
"""Longest history a request may carry (explaining costs one scoring pass per item)."""
MAX_BODY_BYTES = 2_000_000
"""Largest request body read (a full ``MAX_HISTORY`` of long ids fits; anything larger is a 413)."""
MAX_ID = 1_000
"""Longest item or user id a request may name (characters)."""
Id = Annotated[str, Field(max_length=MAX_ID)] | int


class RatedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: Id
    rating: float | None = Field(None, allow_inf_nan=False)


Entry = Id | RatedItem


class RecommendRequest(BaseModel):
    """Either ``user`` (a scenario user, or one created by /update) or histories."""

    model_config = ConfigDict(extra="forbid")
    user: Id | None = None
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
    user: Id
    item_id: Id
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


def _errors(err: RequestValidationError) -> list[dict]:
    """Where and why, once per field. FastAPI's default echoes each bad input back (which
    fails for a non-finite number: JSON has no Infinity) and lists one error per member of a
    union (a NaN rating: three); a client needs the field and the first reason."""
    errors, seen = [], set()
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if x not in UNION_BRANCHES and "[" not in str(x))
        if loc in seen:
            continue
        seen.add(loc)
        errors.append({"loc": loc, "msg": e["msg"], "type": e["type"]})
    return errors


UNION_BRANCHES = {"str", "int", "float", "none", "RatedItem", "constrained-str"}
"""Names pydantic puts in an error's location for the member of a union that failed."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 without being
    read whole (by its Content-Length, or while it streams in)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(title="recmig", description=f"recommendations of {recommender.name}")
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestValidationError)
    def malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if request.method == "POST" and kind != "application/json":
            detail = (
                f"send the body as JSON with Content-Type: application/json (got {shown(kind)})"
            )
            return JSONResponse(status_code=415, content={"detail": detail})
        return JSONResponse(status_code=422, content={"detail": _errors(err)})

    @app.exception_handler(StarletteHTTPException)
    async def unreadable(request: Request, err: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8) with a bare 400; it is as
        # malformed as invalid JSON, which is a 422.
        if err.status_code == 400 and request.method == "POST":
            error = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
            return JSONResponse(status_code=422, content={"detail": [error]})
        return await http_exception_handler(request, err)

    @app.exception_handler(UnknownIdError)
    def unknown_id(request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err)})

    @app.exception_handler(RequestError)  # only refusals: any other error is a 500
    def bad_value(request, err: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(err)})

    @app.get("/health")
    def health() -> dict:
        journal = recommender.journal
        return {
            "status": "ok",
            "strategy": recommender.name,
            "target_items": len(recommender.catalog),
            "users": len(recommender.user_index),
            "users_in_memory": len(recommender.histories),
            "max_users_in_memory": recommender.max_users,
            "journal": None
            if journal is None
            else {
                "path": str(journal.path),
                "updates": len(journal),
                "bytes": journal.size_bytes(),
            },
        }

    @app.post("/recommend")
    def recommend(body: RecommendRequest) -> dict:
        return {"user": body.user, **recommender.answer(**_arguments(body))}

    @app.post("/explain")
    def explain(body: ExplainRequest) -> dict:
        items = recommender.explain_list(**_arguments(body), per_item=body.per_item)
        return {"user": body.user, "items": items}

    @app.post("/update")
    def update(body: UpdateRequest) -> dict:
        history = recommender.update(body.user, body.item_id, body.timestamp, body.rating)
        target = int((history["domain"] == "target").sum())
        return {
            "user": str(body.user),
            "item_id": str(body.item_id),
            "interactions": len(history),
            "target_interactions": target,
            "cold": target == 0,
            "recent": history["item_id"].tail(5).tolist()[::-1],  # newest first
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


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    journal: str | Path | None = None,
    max_users: int | None = None,
) -> None:
    """``recmig serve``: the run over HTTP, its updates kept in ``journal`` (see
    :meth:`Recommender.from_run`)."""
    import uvicorn

    app = create_app(Recommender.from_run(run_dir, journal=journal, max_users=max_users))
    uvicorn.run(app, host=host, port=port, log_level="info")

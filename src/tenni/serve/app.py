"""The HTTP app: predict, health, readiness and model summaries for the model folders it is given.

Errors are JSON with one line that names the field (``{"error": {"code": 422, "field": "inputs[3]", "message":
...}}``); an unexpected failure is a generic 500 whose traceback goes to the server's log only. Request bodies are
never logged.
"""


import asyncio
import hmac
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

from .batching import Batcher
from .inputs import InputError, check_texts, decode_b64_items, forget_files, save_media
from .limits import Limits
from .models import ServedModel, served_models

log = logging.getLogger("tenni.serve")

CONFIG_ENV = "TENNI_SERVE_APP"
"""How ``tenni serve --workers N`` hands its options to the worker processes uvicorn starts."""


class ServerState:
    """What the app holds: the models by name, the limits, and whether it is ready."""

    def __init__(self, models: dict[str, ServedModel], limits: Limits, *, max_batch: int, batch_wait_ms: float,
                 threads: int | None = None):
        self.models = models
        self.limits = limits
        self.max_batch = max_batch
        self.batch_wait_ms = batch_wait_ms
        self.threads = threads
        self.ready = False

    def load_all(self) -> None:
        """Load every model (once per process); the CLI calls it before binding the port, so a bad folder fails
        with one line."""
        if self.threads and any(m.runtime == "torch" for m in self.models.values()):
            import torch

            torch.set_num_threads(self.threads)
        for served in self.models.values():
            served.load(threads=self.threads)


def create_app(model_dirs, *, runtime: str = "torch", limits: Limits | None = None, api_key: str | None = None,
               cors_origins: list[str] | None = None, batch_wait_ms: float = 5, max_batch: int = 64,
               threads: int | None = None):
    """A FastAPI app serving the model folders in ``model_dirs`` (each named by its folder name).

    The folders are checked now (a bad one raises a one-line TenniError); the models load when the app starts
    (its lifespan), once per worker process, and ``/ready`` answers 503 until they have. ``api_key`` protects
    ``/v1/*`` with ``Authorization: Bearer <key>``; ``cors_origins`` turns CORS on for those origins.
    """
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__
    from . import schema

    limits = limits or Limits()
    if not isinstance(limits, Limits):
        from ..errors import ConfigError

        raise ConfigError(f"limits must be a tenni.serve.Limits, not {type(limits).__name__}")
    if api_key is not None and not api_key:
        from ..errors import ConfigError

        raise ConfigError("the API key is empty", hint="set the variable to a long random string")
    state = ServerState(served_models(model_dirs, runtime), limits, max_batch=max_batch,
                        batch_wait_ms=batch_wait_ms, threads=threads)

    @asynccontextmanager
    async def lifespan(app):
        await asyncio.to_thread(state.load_all)
        for served in state.models.values():
            served.batcher = Batcher(served.predict, max_batch=max_batch, wait_s=batch_wait_ms / 1000,
                                     name=served.name)
            served.batcher.start()
        state.ready = True
        log.info("ready: %s (%s runtime)", ", ".join(state.models), runtime)
        try:
            yield
        finally:
            state.ready = False
            for served in state.models.values():
                if served.batcher is not None:
                    await served.batcher.close()
                    served.batcher = None
                served.unload()

    app = FastAPI(title="tenni", version=__version__, lifespan=lifespan,
                  description="Predictions from models fitted with tenni. Errors are JSON: "
                              '`{"error": {"code", "field", "message"}}`.')
    app.state.tenni = state

    # --- errors: always JSON, never a traceback ------------------------------------------------------------------
    @app.exception_handler(InputError)
    async def _input_error(request, exc: InputError):
        return error_response(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(exc.status_code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        first = (exc.errors() or [{}])[0]
        return error_response(422, str(first.get("msg", "invalid request")), field_of(first.get("loc", ())))

    # --- access ----------------------------------------------------------------------------------------------------
    guarded = []
    if api_key is not None:
        from fastapi.security import HTTPBearer

        bearer = HTTPBearer(auto_error=False, description="tenni serve --api-key-env VAR: the variable's value")
        expected = api_key.encode("utf-8")

        async def require_key(credentials=Depends(bearer)):
            given = credentials.credentials.encode("utf-8") if credentials is not None else b""
            if not hmac.compare_digest(given, expected):
                raise InputError("missing or wrong API key: send 'Authorization: Bearer <key>'", field="Authorization",
                                 status=401, headers={"WWW-Authenticate": "Bearer"})

        guarded = [Depends(require_key)]

    def get_model(name: str) -> ServedModel:
        served = state.models.get(name)
        if served is None:
            known = ", ".join(sorted(state.models))
            raise InputError(f"no model named '{name[:100]}' (served: {known})", field="name", status=404)
        return served

    errors = schema.error_responses

    # --- probes ----------------------------------------------------------------------------------------------------
    @app.get("/health", response_model=schema.Health, tags=["probes"], summary="Liveness: the process answers")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", response_model=schema.Ready, tags=["probes"], responses=errors(503),
             summary="Readiness: every model is loaded (503 until then)")
    async def ready():
        loaded = {name: served.loaded and served.batcher is not None for name, served in state.models.items()}
        body = {"ready": state.ready and all(loaded.values()), "models": loaded}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    # --- models ----------------------------------------------------------------------------------------------------
    @app.get("/v1/models", response_model=schema.ModelList, tags=["models"], dependencies=guarded,
             responses=errors(401), summary="The models served, with their labels and measured quality")
    async def list_models():
        return {"models": [served.summary() for served in state.models.values()]}

    @app.get("/v1/models/{name}", response_model=schema.ModelSummary, tags=["models"], dependencies=guarded,
             responses=errors(401, 404), summary="One model: labels, backbone, strategy, metrics, tenni version")
    async def model_summary(name: str):
        return get_model(name).summary()

    @app.post("/v1/models/{name}/predict", tags=["models"], dependencies=guarded,
              response_model=schema.PredictResponse,
              responses=errors(401, 404, 408, 413, 415, 422, 503),
              openapi_extra={"requestBody": schema.predict_request_body(limits)},
              summary="Labels and class probabilities (anomaly models: score and normal/defect), in input order")
    async def predict(name: str, request: Request):
        served = get_model(name)
        if served.batcher is None:
            raise InputError("the models are still loading", status=503)
        folder = None
        inputs: list[str] = []
        try:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "multipart/form-data":
                files = await read_multipart(request, served, limits)
                folder = Path(tempfile.mkdtemp(prefix="tenni-serve-"))
                inputs = await asyncio.to_thread(save_media, files, served.modality, limits, folder)
            elif kind in ("", "application/json") or kind.endswith("+json"):
                items = parse_json_inputs(await request.body(), limits)
                if served.modality == "text":
                    inputs = check_texts(items, limits)
                else:
                    files = decode_b64_items(items)
                    folder = Path(tempfile.mkdtemp(prefix="tenni-serve-"))
                    inputs = await asyncio.to_thread(save_media, files, served.modality, limits, folder)
            else:
                raise InputError(f"unsupported content type '{kind[:60]}': send application/json "
                                 f"({'or multipart/form-data files' if served.modality != 'text' else 'texts'})",
                                 field="Content-Type", status=415)
            predictions = await served.batcher.submit(inputs)
        finally:
            if folder is not None:
                forget_files(inputs)
                shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse({"model": served.name, "predictions": predictions})

    # outermost last: CORS headers are added to every answer, the guard's 413/408/500 included
    app.add_middleware(Guard, limits=limits)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


# --- request bodies -------------------------------------------------------------------------------------------------

def parse_json_inputs(body: bytes, limits: Limits) -> list:
    try:
        payload = json.loads(body)
    except RecursionError:
        raise InputError("the JSON is nested too deeply", field="body") from None
    except ValueError as err:
        raise InputError(f"not valid JSON ({str(err)[:80]})" if body.strip() else "an empty body: send "
                         '{"inputs": [...]}', field="body") from None
    if not isinstance(payload, dict):
        raise InputError('expected a JSON object {"inputs": [...]}', field="body")
    unknown = sorted(set(payload) - {"inputs"})
    if unknown:
        raise InputError(f"unknown key '{str(unknown[0])[:60]}' (the body holds only 'inputs')", field=unknown[0][:60])
    items = payload.get("inputs")
    if items is None:
        raise InputError("missing: send {\"inputs\": [...]}", field="inputs")
    if not isinstance(items, list):
        raise InputError("must be a list of inputs (one text, or one {\"b64\": ...}, per item)", field="inputs")
    if not items:
        raise InputError("empty: send at least one input", field="inputs")
    if len(items) > limits.max_items:
        raise InputError(f"{len(items)} inputs; the limit is {limits.max_items} per request", field="inputs")
    return items


async def read_multipart(request, served: ServedModel, limits: Limits) -> list[tuple[bytes, str | None, str]]:
    if served.modality == "text":
        raise InputError(f"model '{served.name}' takes texts: send JSON {{\"inputs\": [...]}}", field="body",
                         status=415)
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=limits.max_items, max_fields=limits.max_items)
    except HTTPException as err:
        raise InputError(f"cannot read the multipart body: {err.detail}", field="files") from None
    try:
        files = []
        for key, value in form.multi_items():
            if key not in ("files", "file"):
                raise InputError(f"unknown form field '{key[:60]}' (send the files as 'files')", field=key[:60])
            if isinstance(value, str):
                raise InputError("a text field, not a file", field=f"files[{len(files)}]")
            files.append((await value.read(), value.filename, f"files[{len(files)}]"))
    finally:
        await form.close()
    if not files:
        raise InputError("no files: send them as the multipart field 'files'", field="files")
    return files


def field_of(loc) -> str | None:
    """('body', 'inputs', 3) -> 'inputs[3]'."""
    parts = [p for p in loc if p not in ("body", "path", "query", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": status, "field": field, "message": message}}, status_code=status,
                        headers=headers)


# --- the guard: body size, read timeout, unexpected errors, access log ---------------------------------------------

class _TooLarge(InputError):
    pass


class _ReadTimeout(InputError):
    pass


class Guard:
    """A plain ASGI middleware (no per-request task): refuses bodies over the limit (from Content-Length, or while
    reading one without it), stops waiting for a body after ``read_timeout_s``, turns any unexpected exception into
    a generic JSON 500 (traceback to the log), and logs one line per request: method, path, status, latency."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500, "started": False}
        limits = self.limits

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limits.max_body_bytes:
                raise _TooLarge(f"a {declared}-byte body exceeds the limit of {limits.max_body_bytes} bytes",
                                field="body", status=413)
            received = 0
            body_done = False
            deadline = time.monotonic() + limits.read_timeout_s

            async def receive_guarded():
                nonlocal received, body_done
                if body_done:
                    return await receive()
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
                except asyncio.TimeoutError:
                    raise _ReadTimeout(f"the request body was not received within {limits.read_timeout_s:g} s",
                                       field="body", status=408) from None
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limits.max_body_bytes:
                        raise _TooLarge(f"the body exceeds the limit of {limits.max_body_bytes} bytes", field="body",
                                        status=413)
                    body_done = not message.get("more_body", False)
                else:
                    body_done = True
                return message

            await self.app(scope, receive_guarded, send_logged)
        except InputError as err:
            if not status["started"]:
                await _send_error(send_logged, err.status, err.message, err.field, close=True)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not status["started"]:
                await _send_error(send_logged, 500, "internal error (logged on the server)", None, close=False)
        finally:
            client = (scope.get("client") or ("-",))[0]
            log.info("%s %s %s %d %.1f ms", client, scope.get("method"), scope.get("path"), status["code"],
                     (time.perf_counter() - start) * 1000)


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise InputError("Content-Length is not a number", field="Content-Length", status=400) from None
    return None


async def _send_error(send, status: int, message: str, field: str | None, *, close: bool) -> None:
    body = json.dumps({"error": {"code": status, "field": field, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- worker processes -----------------------------------------------------------------------------------------------

def app_from_env():
    """The app of one uvicorn worker process (``tenni serve --workers N``), from the options the CLI put in
    ``$TENNI_SERVE_APP``; the API key is read from the variable it names, never passed around."""
    import dataclasses

    options = json.loads(os.environ[CONFIG_ENV])
    api_key = os.environ.get(options["api_key_env"]) if options.get("api_key_env") else None
    limits = Limits(**{f.name: options["limits"][f.name] for f in dataclasses.fields(Limits)
                       if f.name in options.get("limits", {})})
    return create_app(options["model_dirs"], runtime=options["runtime"], limits=limits, api_key=api_key,
                      cors_origins=options.get("cors_origins"), batch_wait_ms=options["batch_wait_ms"],
                      max_batch=options["max_batch"], threads=options.get("threads"))

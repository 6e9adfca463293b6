"""Running the app with uvicorn: loopback by default, timeouts for slow clients, graceful shutdown, N workers."""

from __future__ import annotations

import json
import os

from .._context import temporary_env
from ..errors import ConfigError
from .limits import Limits

ALL_INTERFACES = ("0.0.0.0", "::", "[::]", "")


def serve(model_dirs, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, runtime: str = "torch",
          api_key_env: str | None = None, cors_origins: list[str] | None = None, batch_wait_ms: float = 5,
          max_batch: int = 64, limits: Limits | None = None, threads: int | None = None,
          log_level: str = "info") -> None:
    """Check the folders, load the models (one worker: before the port is bound, so a bad folder or backbone is a
    one-line error), then serve until SIGINT/SIGTERM; in-flight requests get ``limits.graceful_shutdown_s``.
    ``threads``: torch / onnxruntime compute threads per worker (on a busy machine, spinning threads that wait for
    each other cost more than they give: 1 is then fastest)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs fastapi and uvicorn", hint="pip install 'tenni[serve]'") from None
    from .app import CONFIG_ENV, create_app

    limits = limits or Limits()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number (0-65535)")
    if batch_wait_ms < 0 or max_batch < 1:
        raise ConfigError("--max-batch-wait-ms must be >= 0 and the batch size >= 1")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {api_key_env}: the variable is not set or is empty",
                              hint=f"export {api_key_env}=<a long random string>")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}")
    if threads is None and workers > 1:  # N workers share the cores instead of each spinning on all of them
        threads = max(1, (os.cpu_count() or 1) // workers)
    app = create_app(model_dirs, runtime=runtime, limits=limits, api_key=api_key, cors_origins=cors_origins,
                     batch_wait_ms=batch_wait_ms, max_batch=max_batch, threads=threads)
    from .._logging import info, warn

    if host in ALL_INTERFACES:
        warn(f"binding to {host or 'all interfaces'}: every machine that can reach this one can call the API"
             f"{'' if api_key else ' (no --api-key-env set)'}")
    # h11 even where httptools is installed: its request-head limit (h11_max_incomplete_event_size) is the one set
    options = dict(host=host, port=port, http="h11", timeout_keep_alive=limits.keep_alive_s,
                   timeout_graceful_shutdown=limits.graceful_shutdown_s, limit_concurrency=limits.max_connections,
                   h11_max_incomplete_event_size=limits.max_header_bytes, access_log=False, server_header=False,
                   log_config=log_config(log_level), log_level=log_level)
    # while it serves (and only then): no progress bar per request in the server's log
    env = {"TENNI_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    if workers == 1:
        with temporary_env(**env):
            app.state.tenni.load_all()
            info(f"serving {', '.join(app.state.tenni.models)} on http://{_url_host(host)}:{port} "
                 f"(docs: /docs; Ctrl-C stops)")
            _run(uvicorn, app, options)
        return
    env[CONFIG_ENV] = json.dumps({
        "model_dirs": [str(p) for p in model_dirs], "runtime": runtime, "api_key_env": api_key_env,
        "cors_origins": cors_origins, "batch_wait_ms": batch_wait_ms, "max_batch": max_batch, "threads": threads,
        "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__}})
    info(f"serving {', '.join(app.state.tenni.models)} on http://{_url_host(host)}:{port} with {workers} workers "
         f"(each loads the models once; docs: /docs)")
    with temporary_env(**env):  # the worker processes uvicorn starts inherit it
        _run(uvicorn, "tenni.serve.app:app_from_env", dict(options, factory=True, workers=workers))


def _run(uvicorn, app, options: dict) -> None:
    from .._logging import info

    try:
        uvicorn.run(app, **options)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once the requests in flight are answered
        pass
    info("stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def log_config(level: str = "info") -> dict:
    """uvicorn's logging, with tenni's request lines (method, path, status, latency; never bodies) beside it."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["tenni.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config

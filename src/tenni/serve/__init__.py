"""``tenni serve``: fitted models behind an HTTP API (FastAPI + uvicorn), with dynamic batching and limits.

``create_app(model_dirs, ...)`` gives the FastAPI app to embed in another one; ``serve(...)`` runs it with uvicorn.
Both need the ``serve`` extra (``pip install 'tenni[serve]'``).
"""

from .limits import Limits

__all__ = ["Limits", "create_app", "serve"]


def __getattr__(name):  # fastapi and uvicorn are imported only when used
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)

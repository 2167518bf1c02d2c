"""``auto-glm serve``: an HTTP inference server for exported artifacts.

Needs the ``[serve]`` extra (starlette, uvicorn); the rest of the package and
``tvm_autoglm.runtime`` do not import it.
"""

from .config import ServeConfig


def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    from .server import serve as _serve

    return _serve(config)


__all__ = ["ServeConfig", "serve"]

"""The token endpoint mounted in a Starlette app at ``/lk`` (run by uvicorn in the browser tests).

``uvicorn --factory tests.browser.asgi_app:create_app``; the config file is
``$LK_BROWSER_CONFIG``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import Mount

from livekit.plugins.metadata.server.asgi import TokenASGI
from livekit.plugins.metadata.server.config import ServerConfig

__all__ = ["create_app"]


def create_app() -> Starlette:
    """A host app with the token endpoint under ``/lk`` (``POST /lk/token``...)."""
    config = ServerConfig.from_file(os.environ["LK_BROWSER_CONFIG"])
    return Starlette(routes=[Mount("/lk", app=TokenASGI(config))])

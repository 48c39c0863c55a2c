"""The API reference page, ``/docs`` (Swagger UI), served whole by the coordinator.

FastAPI's own page loads its script, style sheet and icon from public CDNs: on a LAN
without internet (where pools often run) it stays blank. Here every asset comes from the
coordinator, under :data:`ASSETS_PATH`, out of the ``fastapi-offline`` package, which
ships current Swagger UI releases (nothing else is used of it).

There is no ``/redoc``: ReDoc's script always fetches its vendor's logo from a CDN, a
request from every reader's browser to a third party.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the page's script, style sheet and icon are served.
ASSETS_PATH = "/static/reference"
ASSETS = Path(fastapi_offline.__file__).parent / "static"


def install_reference(app: FastAPI) -> None:
    """Serve ``/docs`` for ``app`` (made with ``docs_url=None`` and ``redoc_url=None``, so
    that FastAPI's CDN-backed pages are not there too)."""
    # Before the dashboard's /static mount: the first mount whose prefix matches wins.
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="reference-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

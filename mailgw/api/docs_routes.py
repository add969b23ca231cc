"""The interactive API documentation, served entirely from the installed packages.

The gateway runs on networks without internet access, so /docs must load nothing from a CDN:
the Swagger UI files come from the ``swagger-ui-bundle`` package and are served under
``/docs/assets/``; the validator badge (which calls an outside service) is switched off.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

router = APIRouter(include_in_schema=False)

ASSETS = FilePath(swagger_ui_path)
ASSET_PREFIX = "/docs/assets"
_SERVED = frozenset(
    p.name for p in ASSETS.iterdir() if p.suffix in {".js", ".css", ".png", ".map", ".html"}
)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API",
        swagger_js_url=f"{root}{ASSET_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PREFIX}/favicon-32x32.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(ASSET_PREFIX + "/{name}")
def swagger_asset(name: Annotated[str, Path(max_length=64)]) -> Response:
    if name not in _SERVED:
        raise HTTPException(404, "no such file")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".map"):
        media_type = "application/json"
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response((ASSETS / name).read_bytes(), media_type=media_type, headers=headers)

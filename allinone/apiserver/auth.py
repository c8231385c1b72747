"""The bearer-token check in front of the management API (rules in :mod:`allinone.auth`).

:func:`protect` makes sure the token file exists and, when this server must check it,
registers a request middleware that answers 401 with the standard error body to any
``/api/...`` request without the right ``Authorization: Bearer`` header. It runs
before routing, so it also covers the blueprints other packages add under ``/api/``.
"""

from __future__ import annotations

import logging
from typing import Any

from sanic import HTTPResponse, Request, Sanic

from allinone import auth
from allinone.apiserver.routes import error_response
from allinone.config import Settings

log = logging.getLogger(__name__)


def protect(app: Sanic[Any, Any], settings: Settings) -> bool:
    """Create the token if needed; require it on /api/ when the settings say so."""
    token = auth.ensure_token(settings.token_path)
    if not auth.token_required(settings.host, settings.require_token):
        return False
    hint = (f"send 'Authorization: Bearer TOKEN' (the CLI: --token or $ALLINONE_TOKEN); "
            f"the token is in {settings.token_path} on the server's machine")

    @app.on_request
    async def require_token(request: Request) -> HTTPResponse | None:
        if not request.path.startswith(auth.PROTECTED_PREFIX):
            return None
        header = request.headers.get("authorization")
        if auth.bearer_matches(header, token):
            return None
        problem = "no bearer token" if not header else "a wrong bearer token"
        resp = error_response(401, "Unauthorized",
                              f"this server's management API needs its token; the request "
                              f"had {problem}: {hint}")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="allinone"'
        return resp

    log.info("the management API (%s...) requires the bearer token in %s",
             auth.PROTECTED_PREFIX, settings.token_path)
    return True

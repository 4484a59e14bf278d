"""Who may talk to the server: a bearer token whenever it binds beyond loopback, a Host/Origin check always
(DNS rebinding and cross-site pages), and a request-size limit. Pure ASGI, so it guards HTTP and WebSocket
routes alike and needs no web framework."""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

COOKIE = "samplegraph_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
OPEN_PATHS = frozenset({"/api/v1/health"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_or_create_token(state_dir: Path) -> tuple[str, bool]:
    """The server's token from `<state dir>/token` (mode 0600), created when missing; (token, created)."""
    path = state_dir / "token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"'{path}' is readable by other users; chmod 600 it or delete it for a new token")
        token = path.read_text().strip()
        if len(token) < 32:
            raise ValueError(f"'{path}' holds no valid token; delete it and a new one is generated")
        return token, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def host_name(netloc: str) -> str:
    """The host part of a Host header or an Origin's netloc, without port or IPv6 brackets."""
    return (urlsplit("//" + netloc).hostname or "").lower()


async def refuse(scope: Scope, send: Send, status: int, kind: str, message: str) -> None:
    """A JSON error (HTTP) or a close before accept (WebSocket: the server answers 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="samplegraph"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: token (when `token` is set), Host/Origin checks and a body-size limit."""

    def __init__(self, app: ASGIApp, token: str | None, loopback: bool, max_body: int):
        self.app, self.token, self.loopback, self.max_body = app, token, loopback, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        why = self.origin_problem(headers)
        if why is not None:
            return await refuse(scope, send, 403, "forbidden", why)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await refuse(scope, send, 413, "too_large",
                                f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
        if self.token is None or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given, via_query = self.presented_token(scope, headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return await refuse(scope, send, 401, "unauthorized",
                                "a bearer token is required: 'Authorization: Bearer TOKEN', '?token=TOKEN' or the "
                                f"'{COOKIE}' cookie (the token is in the server's state dir, file 'token')")
        if via_query and scope["type"] == "http":  # a browser opened ?token=...: later requests use the cookie
            send = with_cookie(send, self.token)
        await self.app(scope, receive, send)

    def origin_problem(self, headers: dict[str, str]) -> str | None:
        host = headers.get("host", "")
        if self.loopback and not is_loopback(host_name(host)):
            return f"Host '{host}' is not a loopback name; this server only answers on loopback"
        origin = headers.get("origin")  # browsers send it on every cross-origin request ("null" from sandboxes)
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return f"cross-origin request from '{origin}' refused"
        return None

    @staticmethod
    def presented_token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if query:
            return query[-1], True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no token
            return None, False
        return (cookie[COOKIE].value, False) if COOKIE in cookie else (None, False)


def with_cookie(send: Send, token: str) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            value = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", value.encode())]}
        await send(message)

    return sending

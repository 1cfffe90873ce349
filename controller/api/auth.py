"""Who may talk to the API, and how much: a bearer token, a loopback bind by default, a body limit.

The token is made on the first start into the scope's state directory (a 0600 file in a
0700 directory, so only its owner, root, reads it), or read from --token-file. A file that
others may read is refused, as ssh refuses such a key: the token would not be a secret.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.errors import problem
from controller.api.models import MAX_BATCH
from controller.errors import InnetError
from controller.scope import Scope as StateScope

TOKEN_FILE = "api.token"
# what needs no token: the health check, and the status page with its files (they hold no
# data; the page's script sends the token with each API request it makes)
OPEN_PATHS = {"/healthz", "/"}
STATIC_PREFIX = "/static"
MAX_BODY = 32 * 2**20   # a full nfrouter table (262,144 routes) in JSON is about 29 MiB


def token_path(scope: StateScope) -> Path:
    return scope.state_dir / TOKEN_FILE


def read_token(path: Path) -> str:
    """The token in `path`, refused when the file is empty or others may read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise InnetError(f"cannot read the API token file {path}: {exc.strerror}",
                         hint="`innet api` makes one on its first start; or give the file with --token-file") from None
    with os.fdopen(fd) as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InnetError(f"the API token file {path} may be read by others (mode {stat.filemode(mode)})",
                             hint=f"chmod 600 {path}")
        token = f.read().strip()
    if len(token) < 16:
        raise InnetError(f"the API token file {path} holds no token (at least 16 characters)",
                         hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
    return token


def server_token(scope: StateScope, token_file: str | None) -> tuple[str, Path]:
    """The token the API accepts and the file it is in: --token-file, else the scope's own,
    made now when there is none yet."""
    path = Path(token_file) if token_file else token_path(scope)
    if not token_file:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    return read_token(path), path


def check_bind(host: str, token_file: str | None) -> None:
    """Refuse to listen beyond this machine with a token nobody chose to hand out."""
    if token_file is None and not is_loopback(host):
        raise InnetError(f"refusing to listen on {host} without --token-file: the API would be reachable "
                         f"from other machines with a token made for this one",
                         hint="give --token-file FILE (a token you made, chmod 600), or listen on 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a name: it may resolve anywhere
        return False


class Guard:
    """ASGI middleware: 401 without the bearer token (but on OPEN_PATHS and the page's files),
    413 for a body over `max_body` bytes, declared or streamed. The body is read here, so an oversized one never
    reaches a handler."""

    def __init__(self, app: ASGIApp, token: str, max_body: int = MAX_BODY):
        self.app, self.max_body = app, max_body
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"]
        if path not in OPEN_PATHS and not path.startswith(STATIC_PREFIX + "/") and not hmac.compare_digest(headers.get(b"authorization", b""),
                                                                       self.expected):
            await problem(401, "missing or wrong bearer token", "send the header Authorization: Bearer TOKEN, "
                          "TOKEN from the API's token file", headers={"WWW-Authenticate": "Bearer"})(
                scope, receive, send)
            return
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_body:   # uvicorn refuses one that is not a number
            await self._too_large(scope, receive, send)
            return
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                return
            body.append(message.get("body", b""))
            size += len(body[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
        await self.app(scope, _replay(b"".join(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, f"the request body is over {self.max_body} bytes",
                      f"send the routes in smaller batches (a batch holds at most {MAX_BATCH:,})")(
            scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay

"""Who may reach the studio and where its web files go, free of Gradio: the logins (`--auth-file`, or
$OMNIDEFT_STUDIO_AUTH so no password sits on a command line), the warning for an address beyond this machine, and
the folder below --outputs that holds Gradio's copies of uploads and results."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path

from omnideft.errors import UserError

LOGIN_ENV = "OMNIDEFT_STUDIO_AUTH"  # user:password
UPLOADS = "uploads"  # below --outputs: the page's uploads and Gradio's copies of the results it shows
DEFAULT_MAX_UPLOAD_MB = 50  # a 2048 px PNG, the largest input the models take, is at most 12 MB


def parse_login(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        # the line itself may hold a password: it is never repeated in the message
        raise UserError(f"{where}: expected user:password (both non-empty)")
    return user.strip(), password


def read_logins(auth_file: str | None) -> list[tuple[str, str]]:
    """(user, password) pairs from the file (one `user:password` a line, `#` comments) and from $OMNIDEFT_STUDIO_AUTH;
    empty: no login."""
    logins = []
    if auth_file:
        path = Path(auth_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--auth-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                logins.append(parse_login(line.rstrip("\r\n"), f"--auth-file {path} line {number}"))
        if not logins:
            raise UserError(f"--auth-file {path}: no user:password line in it")
    if os.environ.get(LOGIN_ENV):
        logins.append(parse_login(os.environ[LOGIN_ENV], f"${LOGIN_ENV}"))
    return logins


def auth_file_warning(auth_file: str | None) -> str | None:
    """Like ssh with a private key: a password file others can read is worth a word."""
    if auth_file and Path(auth_file).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"--auth-file {auth_file} can be read by other users of this machine (chmod 600 it)"
    return None


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (127.0.0.0/8, ::1, or a name resolving only to them)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def exposure_warning(host: str, port: int, with_login: bool) -> str | None:
    """What listening on `host` means when others on the network can reach it; None on the loopback."""
    if is_loopback(host):
        return None
    where = f"{host} (every network interface)" if host in ("0.0.0.0", "::", "") else host
    if with_login:
        return (f"listening on {where}, port {port}, behind a login; the connection is plain HTTP, so the password "
                "and the images cross the network unencrypted (put a TLS proxy in front on an untrusted network)")
    return (f"listening on {where}, port {port}, with no login: anyone who can reach this machine can use the "
            f"studio, upload files to it and download its outputs; set a login with --auth-file FILE or "
            f"${LOGIN_ENV}=user:password")


def use_upload_folder(outputs: Path) -> Path:
    """Point Gradio's file cache (uploads, and the copies of results it serves) below --outputs, unless the user
    chose a folder with $GRADIO_TEMP_DIR. Gradio reads the variable when the page is built and at every request,
    so it is set for the process (one studio per process)."""
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or outputs / UPLOADS).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413. Gradio bounds multipart uploads itself
    (`max_file_size`, per file); an image sent as a base64 data URL inside a JSON request (the queue's payload) is
    not, and would be stored whatever its size."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers") or ()) if scope["type"] == "http" else {}
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        received = 0

        async def counted_receive():  # a body without a length (chunked) is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        body = f"Request body exceeded the maximum allowed size of {self.limit} bytes.".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

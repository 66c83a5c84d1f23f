"""Who may log in when the app listens beyond this machine.

On a loopback address (127.0.0.0/8, ::1, ``localhost``) the app serves without a login, as before.
Any other ``--host`` (``0.0.0.0`` and ``::`` included) needs credentials, from the environment
variable ``DIDA_STUDIO_AUTH`` (``user:password``, several pairs comma-separated) or from a file named
by ``--auth-file`` (one ``user:password`` per line, readable by its owner only, like an ssh key).
Error messages name the source and the line, never a password.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from pathlib import Path

AUTH_ENV = "DIDA_STUDIO_AUTH"
Credentials = list[tuple[str, str]]
"""(user, password) pairs, as ``gr.Blocks.launch(auth=...)`` takes them."""


class AuthError(ValueError):
    """Credentials missing, malformed or stored unsafely; the message says how to fix it."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False  # a host name other than localhost may resolve to any interface
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def parse_credentials(entries: list[str], source: str) -> Credentials:
    """``user:password`` entries (spaces around an entry ignored) → pairs; a bad entry is named
    by ``source`` and its number only, never its text."""
    pairs = []
    for number, entry in enumerate(entries, 1):
        user, colon, password = entry.strip().partition(":")
        if not colon or not user.strip() or not password:
            raise AuthError(
                f"{source}: entry {number} is not user:password "
                "(a non-empty user name, a colon, then a non-empty password)"
            )
        pairs.append((user.strip(), password))
    return pairs


def env_credentials(environ: Mapping[str, str]) -> Credentials:
    """Pairs from ``DIDA_STUDIO_AUTH`` (comma-separated); none when it is unset or empty."""
    text = environ.get(AUTH_ENV, "").strip()
    if not text:
        return []
    return parse_credentials(text.split(","), f"environment variable {AUTH_ENV}")


def file_credentials(path: str | Path) -> Credentials:
    """Pairs from an auth file (blank lines and ``#`` comments skipped); refuses a file that
    group or others may read or write."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise AuthError(f"auth file {path} cannot be read ({err.strerror})") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(
            f"auth file {path} is accessible by group or others (mode {stat.filemode(mode)}); "
            f"make it private with: chmod 600 {path}"
        )
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    entries = [line for line in lines if not line.lstrip().startswith("#")]
    if not entries:
        raise AuthError(f"auth file {path} holds no user:password line")
    return parse_credentials(entries, f"auth file {path}")


def missing_credentials_message(host: str, port: int, command: str = "dida-studio") -> str:
    """How to start the app on a non-loopback ``host``: what is required and the two ways."""
    return (
        f"--host {host} accepts connections from other machines, so DIDA Studio requires a login "
        "there and did not start. Provide credentials in one of two ways:\n"
        f"  1. export {AUTH_ENV}='user:password'   (several pairs comma-separated), then\n"
        f"     {command} --host {host} --port {port}\n"
        f"  2. {command} --host {host} --port {port} --auth-file PATH\n"
        "     (PATH holds one user:password per line; chmod 600 PATH)\n"
        "or leave out --host to serve on 127.0.0.1 (this machine only). See docs/SECURITY.md."
    )


def credentials_for(
    host: str,
    port: int,
    auth_file: str | None,
    environ: Mapping[str, str] | None = None,
    command: str = "dida-studio",
) -> Credentials | None:
    """The login pairs to serve with: from the file and the environment together; None (no
    login) on a loopback host without any; an AuthError on any other host without any."""
    environ = os.environ if environ is None else environ
    pairs = (file_credentials(auth_file) if auth_file else []) + env_credentials(environ)
    if pairs:
        return pairs
    if is_loopback(host):
        return None
    raise AuthError(missing_credentials_message(host, port, command))

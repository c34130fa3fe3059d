"""Secrets the command line takes (bearer tokens, S3 secret keys), from files or the environment.

A value given as a flag (``--token VALUE``) is visible to every local user in ``ps`` and in
``/proc/<pid>/cmdline`` for as long as the process runs, so every secret has two other ways in:
a file (``--token-file PATH`` or ``TIDEPOOL_TOKEN_FILE``, read once, first line, surrounding
whitespace dropped: the shape of a mounted Kubernetes Secret) and an environment variable
(``TIDEPOOL_TOKEN``). The flag still
works, so existing scripts keep running, but :func:`resolve_secret` logs a warning that names the
flag and the safer ways each time it is used.

:func:`add_secret_args` adds the pair of flags with the same help everywhere; the commands call
:func:`resolve_secret` on the parsed values. Limits: a file is refused when larger than
:data:`MAX_SECRET_FILE` bytes or empty, and a file readable by group or others only draws a
warning (the secret is already out, and refusing would break deployments that mount it so).
"""

from __future__ import annotations

import argparse
import logging
import stat
from collections.abc import Mapping
from pathlib import Path

from tidepool.core.errors import ConfigError

__all__ = ["MAX_SECRET_FILE", "add_secret_args", "read_secret_file", "resolve_secret"]

log = logging.getLogger(__name__)

MAX_SECRET_FILE = 64 << 10


def add_secret_args(
    parser: argparse.ArgumentParser, name: str, env: str, what: str, *, dest: str | None = None
) -> None:
    """``--NAME`` (a value, discouraged) and ``--NAME-file`` (a path) for the secret ``what``."""
    dest = dest or name.replace("-", "_")
    parser.add_argument(
        f"--{name}-file",
        dest=f"{dest}_file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"read the {what} from this file (or set {env})",
    )
    parser.add_argument(
        f"--{name}",
        dest=dest,
        default=None,
        metavar="VALUE",
        help=f"the {what} itself: visible in ps to every local user; prefer --{name}-file or {env}",
    )


def read_secret_file(path: Path, flag: str) -> str:
    """The secret in ``path``: its first line, stripped; :class:`ConfigError` naming the file."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISFIFO(info.st_mode):
            raise ConfigError(f"{flag} {path}: not a regular file")
        if info.st_size > MAX_SECRET_FILE:
            raise ConfigError(
                f"{flag} {path}: {info.st_size} bytes; a secret file holds at most "
                f"{MAX_SECRET_FILE} bytes"
            )
        with path.open("rb") as f:
            raw = f.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: not UTF-8 text") from None
    lines = text.strip().splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise ConfigError(f"{flag} {path}: the file is empty")
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning(
            "%s %s can be read by other users (mode %o); chmod 600 it",
            flag,
            path,
            stat.S_IMODE(info.st_mode),
        )
    return value


def resolve_secret(
    value: str | None,
    file: Path | None,
    environ: Mapping[str, str],
    *,
    name: str,
    env: str,
) -> str | None:
    """The secret from ``--NAME-file``, ``--NAME`` (with a warning), the variable ``env`` or a
    file named by ``env_FILE``, in that order.

    Giving both the file and the value is a :class:`ConfigError`: one of them would be ignored.
    """
    if file is not None and value is not None:
        raise ConfigError(f"give --{name} or --{name}-file, not both")
    if file is not None:
        return read_secret_file(file, f"--{name}-file")
    if value is not None:
        log.warning(
            "--%s on the command line is visible to every local user in ps; use --%s-file or "
            "set %s instead",
            name,
            name,
            env,
        )
        return value or None
    if environ.get(env):
        return environ[env]
    if environ.get(f"{env}_FILE"):
        return read_secret_file(Path(environ[f"{env}_FILE"]), f"{env}_FILE")
    return None

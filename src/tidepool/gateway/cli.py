"""``tidepool gateway``: the command-line verb that runs the S3 gateway until SIGINT/SIGTERM.

:func:`add_gateway_args` adds the flags to an ``argparse`` parser and :func:`run_gateway` runs the
verb; the main CLI wires them in. Credentials come from ``--access-key`` with its secret from
``--secret-key-file`` or ``TIDEPOOL_GATEWAY_SECRET_KEY`` (``--secret-key VALUE`` still works and
warns: a flag is visible in ``ps``), and/or ``--credentials-file`` (one ``ACCESS:SECRET`` per
line, ``#`` comments); the gateway refuses to start without any. The worker's token comes the
same way (``--token-file``, ``TIDEPOOL_TOKEN``). ``--public-host`` names the addresses clients
sign for (see :mod:`tidepool.gateway.hosts`).

With ``--tls-cert``/``--tls-key`` (or ``TIDEPOOL_GATEWAY_TLS_CERT``/``_KEY``) the gateway serves
HTTPS (:mod:`tidepool.pool.tls`).

Limits: the listen address is ``HOST:PORT``; nothing beyond loopback is refused here, but every
request must be signed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from tidepool.core.errors import ConfigError, redact
from tidepool.gateway.server import Gateway
from tidepool.pool.tls import server_context
from tidepool.serving import ServerLimits
from tidepool.spec.credentials import add_secret_args, resolve_secret

__all__ = ["add_gateway_args", "load_credentials", "parse_listen", "run_gateway"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9000"


def add_gateway_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("TIDEPOOL_ENDPOINT", "http://127.0.0.1:8433"),
        help="the Tidepool worker (env TIDEPOOL_ENDPOINT, default %(default)s)",
    )
    add_secret_args(parser, "token", "TIDEPOOL_TOKEN", "bearer token of the worker")
    parser.add_argument(
        "--access-key",
        default=os.environ.get("TIDEPOOL_GATEWAY_ACCESS_KEY"),
        help="S3 access key id clients sign with (env TIDEPOOL_GATEWAY_ACCESS_KEY)",
    )
    add_secret_args(parser, "secret-key", "TIDEPOOL_GATEWAY_SECRET_KEY", "secret of --access-key")
    parser.add_argument(
        "--credentials-file", type=Path, help="file of ACCESS:SECRET lines (more than one key)"
    )
    parser.add_argument(
        "--region", default="us-east-1", help="region the buckets report (default %(default)s)"
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=os.environ.get("TIDEPOOL_GATEWAY_TLS_CERT"),
        help="PEM certificate chain: serve HTTPS (with --tls-key)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=os.environ.get("TIDEPOOL_GATEWAY_TLS_KEY"),
        help="the certificate's PEM private key",
    )
    parser.add_argument(
        "--public-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a name clients reach the gateway by (repeatable); signed requests must name one "
        "(default: the listen address)",
    )


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {text!r} must look like HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def load_credentials(
    access_key: str | None, secret_key: str | None, path: Path | None
) -> dict[str, str]:
    """Access key id -> secret from the flags and the file; :class:`ConfigError` if none."""
    creds: dict[str, str] = {}
    if bool(access_key) != bool(secret_key):
        raise ConfigError(
            "give both --access-key and its secret (--secret-key-file or "
            "TIDEPOOL_GATEWAY_SECRET_KEY), or neither"
        )
    if access_key and secret_key:
        creds[access_key] = secret_key
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --credentials-file {path}: {exc.strerror}") from exc
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, secret = line.partition(":")
            if not sep or not key.strip() or not secret.strip():
                raise ConfigError(f"{path}:{n}: expected ACCESS:SECRET")
            creds[key.strip()] = secret.strip()
    if not creds:
        raise ConfigError(
            "the S3 gateway needs credentials: set TIDEPOOL_GATEWAY_ACCESS_KEY and "
            "TIDEPOOL_GATEWAY_SECRET_KEY, pass --access-key with --secret-key-file, or "
            "--credentials-file"
        )
    return creds


async def serve(gateway: Gateway) -> None:
    """Run ``gateway`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        print(f"tidepool gateway serving on {gateway.url}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.stop()


def run_gateway(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
        secret = resolve_secret(
            args.secret_key,
            args.secret_key_file,
            os.environ,
            name="secret-key",
            env="TIDEPOOL_GATEWAY_SECRET_KEY",
        )
        creds = load_credentials(args.access_key, secret, args.credentials_file)
        token = resolve_secret(
            args.token, args.token_file, os.environ, name="token", env="TIDEPOOL_TOKEN"
        )
        limits = ServerLimits.from_env(os.environ)
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        tls = server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (ConfigError, ValueError) as exc:
        print(f"tidepool gateway: {redact(str(exc))}", file=sys.stderr)
        return 2
    gateway = Gateway(
        args.endpoint,
        token,
        creds,
        host=host,
        port=port,
        region=args.region,
        ssl_context=tls,
        public_hosts=args.public_host,
        limits=limits,
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve(gateway))
    except OSError as exc:
        print(f"tidepool gateway: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tidepool.gateway.cli`` until the main CLI has the verb."""
    parser = argparse.ArgumentParser(prog="tidepool gateway", description=__doc__)
    add_gateway_args(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_gateway(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

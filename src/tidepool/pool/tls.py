"""TLS for Tidepool's listeners (worker, S3 gateway) and for worker-to-worker connections.

TLS is optional: it is on when a certificate and key are given (``--tls-cert``/``--tls-key`` or
``TIDEPOOL_TLS_CERT``/``TIDEPOOL_TLS_KEY``). Peers and clients verify the server's certificate
against the system's trust store, or against ``--tls-ca``/``TIDEPOOL_TLS_CA`` for a private CA
(Python's ``ssl`` also honours ``SSL_CERT_FILE``). Host names are always checked: a member's
address must name what its certificate covers.

Limits: no client certificates (peers and clients authenticate with bearer credentials, which TLS
keeps off the wire); certificates are read at start, so a renewed one needs a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from tidepool.core.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A listener's context: TLS 1.2 or newer, the certificate chain in ``cert``, its ``key``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"TLS certificate or key file not found: {exc.filename}; give a PEM certificate "
            "chain (--tls-cert) and its private key (--tls-key)"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot use TLS certificate {cert} with key {key}: {exc}; both must be PEM files "
            "and the key must belong to the certificate"
        ) from None
    return ctx


def client_context(ca: Path | None = None) -> ssl.SSLContext:
    """A context that verifies servers against ``ca`` (a PEM bundle) or the system's CAs."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except FileNotFoundError:
        raise ConfigError(f"TLS CA file {ca} not found; give a PEM bundle (--tls-ca)") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load TLS CA file {ca}: {exc}; it must be PEM") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def scheme(tls: bool) -> str:
    return "https" if tls else "http"

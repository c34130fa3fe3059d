"""AWS Signature Version 4 verification for the S3 gateway: pure functions, no sockets.

:func:`verify` takes what a request carries — method, the raw path and query string exactly as
they arrived, the headers, the current time — and a lookup from access key id to secret, and
either returns the access key id or raises :class:`~tidepool.gateway.errors.S3Error` with the code
S3 would send (``AccessDenied``, ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
``RequestTimeTooSkewed``, ``AuthorizationHeaderMalformed``, ``AuthorizationQueryParametersError``).
Both forms are accepted: the ``Authorization: AWS4-HMAC-SHA256 Credential=…`` header and the
presigned query (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``,
``X-Amz-SignedHeaders``, ``X-Amz-Signature``).

The canonical request follows the AWS spec for S3: the path is *not* normalised and not encoded
twice. Clients differ in how they put a key on the wire (botocore percent-encodes everything but
``/~`` and unreserved characters; others send some characters raw), so two canonical paths are
tried: the S3 encoding of the decoded path, then the raw path as sent. Query parameters are
decoded, re-encoded with the strict rules and sorted.

An unknown access key id and a wrong signature get the same answer, ``SignatureDoesNotMatch``
(403), after the same work (a signature is computed with a stand-in secret): AWS answers
``InvalidAccessKeyId`` for the first, which tells anyone without a secret which key ids exist;
clients treat both as the same non-retryable 403, so nothing is lost by not telling them apart.
The region of the credential scope must be the gateway's (``AuthorizationHeaderMalformed``, as
S3 answers, naming the expected one) and, after the signature held, the signed ``Host`` must be
one the gateway answers to (``AccessDenied``): a request signed for another endpoint that shares
the key cannot be replayed here. Header values that are not UTF-8 are signed as the bytes they
are (they reach us as surrogate escapes), so they verify or fail like any other, never crash.

Limits: the payload hash is taken from ``x-amz-content-sha256`` (or ``UNSIGNED-PAYLOAD`` for
presigned URLs) and never checked against a body — the gateway is read-only and reads no bodies.
The service must be ``s3``. No SigV2, no session tokens (``X-Amz-Security-Token`` is ignored).
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_tz
from urllib.parse import quote, unquote

from tidepool.gateway.errors import S3Error

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_EXPIRES",
    "MAX_SKEW",
    "UNSIGNED_PAYLOAD",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "parse_query",
    "signature",
    "uri_encode",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 15 * 60
"""Seconds a request's timestamp may differ from the gateway's clock (AWS: 15 minutes)."""
MAX_EXPIRES = 7 * 24 * 3600
"""Longest validity of a presigned URL (AWS: 7 days)."""

SecretLookup = Callable[[str], "str | None"]

_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z", re.ASCII)
_SCOPE_DATE = re.compile(r"[0-9]{8}", re.ASCII)
_REGION = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_EXPIRES = re.compile(r"[0-9]{1,7}", re.ASCII)
_STAND_IN_SECRET = secrets.token_urlsafe(30)
"""Signs for access key ids we do not know, so they cost what a known one costs."""
_NO_MATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


@dataclass(frozen=True)
class _Signed:
    """What a request claims about its signature, from either form."""

    access_key: str
    date: str  # yyyymmdd of the scope
    region: str
    service: str
    amz_date: str  # yyyymmddThhmmssZ
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str
    presigned: bool


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """Percent-encode every byte but ``A-Za-z0-9-_.~`` (and ``/`` when ``keep_slash``)."""
    return quote(text, safe="/" if keep_slash else "", encoding="utf-8", errors="surrogatepass")


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode ``a=1&b&c=%2F`` into pairs in wire order (``+`` stays a plus sign)."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def canonical_query(params: Iterable[tuple[str, str]], exclude: str = "") -> str:
    """Strictly encoded, sorted ``name=value`` pairs joined with ``&``."""
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in params if k != exclude)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_headers(headers: Sequence[tuple[str, str]], signed: Sequence[str]) -> str:
    """``name:value\\n`` for each signed header: values trimmed, inner spaces collapsed."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    return "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed)


def canonical_request(
    method: str,
    canonical_uri: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    signed: Sequence[str],
    payload_hash: str,
) -> str:
    return "\n".join(
        [
            method.upper(),
            canonical_uri,
            query,
            canonical_headers(headers, signed),
            ";".join(signed),
            payload_hash,
        ]
    )


def _wire(text: str) -> bytes:
    """The bytes ``text`` stood for on the wire: header bytes that were not UTF-8 reach us as
    surrogate escapes; any other lone surrogate cannot have come off the wire and is kept as
    is (the signature then simply does not match)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@functools.lru_cache(maxsize=256)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _wire("AWS4" + secret)
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, _wire(part), hashlib.sha256).digest()
    return key


def signature(secret: str, amz_date: str, scope: str, canonical: str) -> str:
    """The hex signature of a canonical request under ``scope`` (``date/region/service/...``)."""
    date, region, service, _ = scope.split("/")
    # header values that were not UTF-8 arrive as surrogate escapes: sign their real bytes
    digest = hashlib.sha256(_wire(canonical)).hexdigest()
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, digest])
    key = _signing_key(secret, date, region, service)
    return hmac.new(key, _wire(string_to_sign), hashlib.sha256).hexdigest()


def _parse_amz_date(text: str) -> float | None:
    if not _AMZ_DATE.fullmatch(text):
        return None  # strptime alone would take Unicode digits
    try:
        return float(calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def _http_date_to_amz(text: str) -> str | None:
    parsed = parsedate_tz(text)
    if parsed is None:
        return None
    stamp = calendar.timegm(parsed[:6]) - (parsed[9] or 0)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(stamp))


def _credential(text: str, malformed: S3Error) -> tuple[str, str, str, str]:
    parts = text.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or parts[4] != "aws4_request":
        raise malformed
    if not _SCOPE_DATE.fullmatch(parts[1]) or not _REGION.fullmatch(parts[2]):
        raise malformed
    if parts[3] != "s3":
        raise S3Error(
            malformed.code, f"the credential scope names service {parts[3]!r}; expected 's3'"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _from_header(auth: str, header: dict[str, str]) -> _Signed:
    malformed = S3Error(
        "AuthorizationHeaderMalformed",
        "the authorization header is malformed; expected 'AWS4-HMAC-SHA256 Credential=…, "
        "SignedHeaders=…, Signature=…'",
    )
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidRequest",
            "the authorization mechanism you have provided is not supported; "
            "please use AWS4-HMAC-SHA256",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            fields[name] = value.strip()
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        raise malformed
    access_key, date, region, service = _credential(fields["Credential"], malformed)
    amz_date = header.get("x-amz-date") or _http_date_to_amz(header.get("date", "")) or ""
    return _Signed(
        access_key,
        date,
        region,
        service,
        amz_date,
        tuple(fields["SignedHeaders"].split(";")),
        fields["Signature"].lower(),
        header.get("x-amz-content-sha256", EMPTY_SHA256),
        presigned=False,
    )


def _from_query(query: dict[str, str]) -> _Signed:
    missing = [
        name
        for name in (
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if name not in query
    ]
    if query.get("X-Amz-Algorithm") != ALGORITHM or missing:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "query-string authentication version 4 requires the X-Amz-Algorithm "
            f"({ALGORITHM}), X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
            "X-Amz-SignedHeaders and X-Amz-Expires parameters",
        )
    malformed = S3Error(
        "AuthorizationQueryParametersError",
        "X-Amz-Credential must look like '<access key>/<yyyymmdd>/<region>/s3/aws4_request'",
    )
    access_key, date, region, service = _credential(query["X-Amz-Credential"], malformed)
    return _Signed(
        access_key,
        date,
        region,
        service,
        query["X-Amz-Date"],
        tuple(query["X-Amz-SignedHeaders"].split(";")),
        query["X-Amz-Signature"].lower(),
        query.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD),
        presigned=True,
    )


def _check_time(signed: _Signed, query: dict[str, str], now: float) -> None:
    code = "AuthorizationQueryParametersError" if signed.presigned else "AccessDenied"
    stamp = _parse_amz_date(signed.amz_date)
    if stamp is None:
        raise S3Error(
            code,
            f"X-Amz-Date {signed.amz_date!r} must be in the ISO 8601 basic format "
            "yyyyMMdd'T'HHmmss'Z'",
            400 if signed.presigned else 403,
        )
    if signed.amz_date[:8] != signed.date:
        raise S3Error(
            "AuthorizationHeaderMalformed" if not signed.presigned else code,
            f"the credential scope date {signed.date!r} does not match the request date "
            f"{signed.amz_date[:8]!r}",
        )
    if not signed.presigned:
        if abs(now - stamp) > MAX_SKEW:
            raise S3Error(
                "RequestTimeTooSkewed",
                "the difference between the request time and the server's time is too large "
                f"(request {signed.amz_date}, at most {MAX_SKEW // 60} minutes allowed)",
                403,
            )
        return
    expires_text = query["X-Amz-Expires"]
    if not _EXPIRES.fullmatch(expires_text) or not 1 <= int(expires_text) <= MAX_EXPIRES:
        raise S3Error(
            code,
            f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_EXPIRES} "
            f"(7 days), got {expires_text[:20]!r}",
        )
    if now > stamp + int(expires_text):
        raise S3Error("AccessDenied", "Request has expired", 403)
    if stamp > now + MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet", 403)


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    now: float,
    secret_for: SecretLookup,
    *,
    region: str | None = None,
    host_ok: Callable[[str], bool] | None = None,
) -> str:
    """Check a request's SigV4 signature; return its access key id or raise :class:`S3Error`.

    ``raw_path`` and ``raw_query`` are exactly as on the request line (still percent-encoded);
    ``now`` is seconds since the epoch; ``secret_for`` maps an access key id to its secret.
    ``region``: the only region the credential scope may name (None: any). ``host_ok``: whether
    a signed ``Host`` value is one of ours (None: any; see :mod:`tidepool.gateway.hosts`).
    """
    header = {name.lower(): value for name, value in headers}
    params = parse_query(raw_query)
    query = dict(params)
    if "authorization" in header:
        signed = _from_header(header["authorization"], header)
    elif "X-Amz-Algorithm" in query or "X-Amz-Signature" in query:
        signed = _from_query(query)
    elif "AWSAccessKeyId" in query and "Signature" in query:
        raise S3Error(
            "InvalidRequest",
            "presigned URLs must use AWS Signature Version 4, not version 2 (boto3: "
            "Config(signature_version='s3v4'))",
        )
    else:
        raise S3Error(
            "AccessDenied",
            "anonymous access is not allowed: sign requests with AWS Signature Version 4",
            403,
        )
    if "host" not in signed.signed_headers:
        raise S3Error(
            "AuthorizationQueryParametersError" if signed.presigned else "AccessDenied",
            "the host header must be signed (SignedHeaders must include 'host')",
            400 if signed.presigned else 403,
        )
    if region is not None and signed.region != region:
        raise S3Error(
            "AuthorizationHeaderMalformed"
            if not signed.presigned
            else "AuthorizationQueryParametersError",
            f"the region {signed.region!r} is wrong; expecting {region!r}",
        )
    _check_time(signed, query, now)
    secret = secret_for(signed.access_key)
    known = secret is not None
    cquery = canonical_query(params, exclude="X-Amz-Signature" if signed.presigned else "")
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    decoded = unquote(raw_path, errors="surrogateescape")
    candidates = dict.fromkeys([uri_encode(decoded, keep_slash=True), raw_path])
    for uri in candidates:
        canonical = canonical_request(
            method, uri, cquery, headers, signed.signed_headers, signed.payload_hash
        )
        expected = signature(
            secret if secret is not None else _STAND_IN_SECRET, signed.amz_date, scope, canonical
        )
        given = signed.signature.encode("ascii", "replace")
        if hmac.compare_digest(expected.encode(), given) and known:
            if host_ok is not None and not host_ok(header.get("host", "")):
                raise S3Error(
                    "AccessDenied",
                    "the request was signed for another endpoint (its Host is not an address "
                    "of this gateway)",
                    403,
                )
            return signed.access_key
    raise S3Error("SignatureDoesNotMatch", _NO_MATCH, 403)

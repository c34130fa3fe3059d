"""The S3 XML documents the gateway answers with: pure functions from values to bytes.

ListAllMyBucketsResult, ListBucketResult (v1 and v2, with CommonPrefixes), LocationConstraint
and Error, in the ``http://s3.amazonaws.com/doc/2006-03-01/`` namespace (Error has none, as on
AWS). ETags are quoted, LastModified is ISO 8601 with milliseconds and ``Z``. With
``encoding-type=url`` keys and prefixes are percent-encoded (botocore asks for this by default
and decodes them); otherwise characters XML 1.0 cannot carry are written as character references,
as S3 does.

Limits: strings are built directly, not through an XML library — every value goes through
:func:`text`, and nothing else is interpolated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from urllib.parse import quote
from xml.sax.saxutils import escape

from tidepool.gateway.listing import Entry, Page
from tidepool.gateway.operations import ListParams, encode_token

__all__ = [
    "NS",
    "error_xml",
    "iso8601",
    "list_buckets_xml",
    "list_objects_xml",
    "location_xml",
    "text",
]

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
OWNER_ID = "tidepool"


def text(value: str) -> str:
    """``value`` safe inside an XML element."""
    return _CONTROL.sub(lambda m: f"&#x{ord(m.group()):x};", escape(value, {'"': "&quot;"}))


def iso8601(stamp: float) -> str:
    millis = int(stamp * 1000)
    seconds = time.gmtime(millis // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{millis % 1000:03d}Z"


def _el(name: str, value: str) -> str:
    return f"<{name}>{text(value)}</{name}>"


def _owner() -> str:
    return f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>"


def list_buckets_xml(buckets: Iterable[str], created: float) -> bytes:
    items = "".join(
        f"<Bucket>{_el('Name', b)}<CreationDate>{iso8601(created)}</CreationDate></Bucket>"
        for b in buckets
    )
    return (
        f'{_HEAD}<ListAllMyBucketsResult xmlns="{NS}">{_owner()}'
        f"<Buckets>{items}</Buckets></ListAllMyBucketsResult>"
    ).encode()


def location_xml(region: str) -> bytes:
    """us-east-1 is the empty constraint, as on AWS (boto3 reads it as ``None``)."""
    value = "" if region == "us-east-1" else text(region)
    return f'{_HEAD}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()


def _entry(e: Entry, enc: bool, owner: bool) -> str:
    modified = iso8601(e.mtime) if e.mtime is not None else iso8601(0)
    return (
        f"<Contents>{_el('Key', _enc(e.key, enc))}<LastModified>{modified}</LastModified>"
        f"{_el('ETag', chr(34) + e.etag + chr(34) if e.etag else '')}<Size>{e.size}</Size>"
        f"{_owner() if owner else ''}<StorageClass>STANDARD</StorageClass></Contents>"
    )


def _enc(value: str, enc: bool) -> str:
    return quote(value, safe="/") if enc else value


def list_objects_xml(bucket: str, params: ListParams, page: Page, *, v2: bool) -> bytes:
    """ListBucketResult for ListObjectsV2 (``v2``) or ListObjects (v1, marker paging)."""
    enc = params.url_encoding
    parts = [f'{_HEAD}<ListBucketResult xmlns="{NS}">', _el("Name", bucket)]
    parts.append(_el("Prefix", _enc(params.prefix, enc)))
    if v2:
        if params.start_after:
            parts.append(_el("StartAfter", _enc(params.start_after, enc)))
        if params.token is not None:
            parts.append(_el("ContinuationToken", params.token))
        if page.truncated and page.next_after is not None:
            parts.append(_el("NextContinuationToken", encode_token(page.next_after)))
        parts.append(f"<KeyCount>{page.count}</KeyCount>")
    else:
        parts.append(_el("Marker", _enc(params.marker, enc)))
        if page.truncated and page.next_after is not None:
            parts.append(_el("NextMarker", _enc(page.next_after, enc)))
    parts.append(f"<MaxKeys>{params.max_keys}</MaxKeys>")
    if params.delimiter:
        parts.append(_el("Delimiter", _enc(params.delimiter, enc)))
    if enc:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>")
    owner = params.fetch_owner
    parts.extend(_entry(e, enc, owner) for e in page.contents)
    parts.extend(
        f"<CommonPrefixes>{_el('Prefix', _enc(p, enc))}</CommonPrefixes>"
        for p in page.common_prefixes
    )
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def error_xml(
    code: str, message: str, resource: str, request_id: str, extra: dict[str, str] | None = None
) -> bytes:
    fields = "".join(_el(k, v) for k, v in (extra or {}).items())
    return (
        f"{_HEAD}<Error>{_el('Code', code)}{_el('Message', message)}{fields}"
        f"{_el('Resource', resource)}{_el('RequestId', request_id)}</Error>"
    ).encode()

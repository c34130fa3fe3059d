"""Pure S3 request handling: operations, listing pages, GET planning and XML, without sockets."""

from __future__ import annotations

import calendar
import xml.etree.ElementTree as ET
from email.utils import formatdate
from typing import Any

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import RestXMLParser
from hypothesis import given, settings
from hypothesis import strategies as st

from tidepool.core import keys
from tidepool.core.errors import OriginUnavailableError, UnknownDatasetError
from tidepool.core.paths import normalize
from tidepool.gateway import xml
from tidepool.gateway.errors import S3Error, s3_error
from tidepool.gateway.listing import Entry, list_page, search_root
from tidepool.gateway.objects import part_number, plan_get
from tidepool.gateway.operations import (
    MAX_KEYS,
    ListParams,
    decode_token,
    encode_token,
    parse_request,
)

# ---- operations -------------------------------------------------------------------------------


def code_of(method: str, path: str, query: str = "") -> str:
    with pytest.raises(S3Error) as err:
        parse_request(method, path, query)
    return err.value.code


def test_operations_by_shape() -> None:
    assert parse_request("GET", "/").name == "ListBuckets"
    assert parse_request("HEAD", "/ds").name == "HeadBucket"
    assert parse_request("GET", "/ds", "location").name == "GetBucketLocation"
    v2 = parse_request("GET", "/ds/", "list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5000")
    assert v2.name == "ListObjectsV2" and v2.listing is not None
    assert (v2.listing.prefix, v2.listing.delimiter, v2.listing.max_keys) == ("a/b", "/", MAX_KEYS)
    v1 = parse_request("GET", "/ds", "marker=k%2B1&max-keys=7")
    assert v1.name == "ListObjects" and v1.listing == ListParams(
        max_keys=7, after="k+1", marker="k+1", fetch_owner=True
    )
    get = parse_request("GET", "/ds/dir%20x/%E6%97%A5.bin", "response-content-type=text%2Fplain")
    assert (get.name, get.bucket, get.key) == ("GetObject", "ds", "dir x/日.bin")
    assert get.query["response-content-type"] == "text/plain"
    assert parse_request("HEAD", "/ds/a+b").key == "a+b"


def test_continuation_token_round_trip_and_start_after() -> None:
    token = encode_token("many/k00999.txt")
    assert decode_token(token) == "many/k00999.txt"
    op = parse_request("GET", "/ds", f"list-type=2&continuation-token={token}&start-after=a")
    assert op.listing is not None and op.listing.after == "many/k00999.txt"
    assert op.listing.token == token and op.listing.start_after == "a"
    assert code_of("GET", "/ds", "list-type=2&continuation-token=bm9wZQ") == "InvalidArgument"
    assert code_of("GET", "/ds", "list-type=2&continuation-token=%%%") == "InvalidArgument"


@pytest.mark.parametrize(
    ("method", "path", "query", "code"),
    [
        ("PUT", "/ds/k", "", "AccessDenied"),
        ("POST", "/ds", "delete", "AccessDenied"),
        ("DELETE", "/ds/k", "", "AccessDenied"),
        ("OPTIONS", "/ds/k", "", "MethodNotAllowed"),
        ("GET", "/ds/k", "acl", "NotImplemented"),
        ("GET", "/ds", "versioning", "NotImplemented"),
        ("GET", "/ds", "list-type=2&max-keys=-1", "InvalidArgument"),
        ("GET", "/ds", "list-type=2&max-keys=ten", "InvalidArgument"),
        ("GET", "/ds", "encoding-type=base64", "InvalidArgument"),
        ("GET", "/ds/a%00b", "", "NoSuchKey"),
        ("GET", "/ds/%FF", "", "InvalidURI"),
        ("GET", "//k", "", "InvalidBucketName"),
        ("GET", "ds/k", "", "InvalidURI"),
    ],
)
def test_refusals(method: str, path: str, query: str, code: str) -> None:
    assert code_of(method, path, query) == code


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "get", "TRACE"]),
    path=st.text(max_size=60),
    query=st.text(max_size=60),
)
def test_parser_never_crashes_and_never_escapes(method: str, path: str, query: str) -> None:
    try:
        op = parse_request(method, path, query)
    except S3Error as err:
        assert 400 <= err.status < 600 and err.code
        return
    assert "/" not in op.bucket and "\x00" not in op.bucket
    if op.key:  # any S3 key; the dataset path it names stays inside the dataset
        for size in (0, 1):
            path = keys.place(op.key, size).path
            assert normalize(path) == path
            assert ".." not in path.split("/")


@pytest.mark.parametrize(
    ("raw", "key", "path"),
    [
        ("/ds/a/../../etc/passwd", "a/../../etc/passwd", "a/~%..%2F..%2Fetc%2Fpasswd"),
        ("/ds/a/%2e%2e/b", "a/../b", "a/~%..%2Fb"),
        ("/ds/a//b", "a//b", "a/~%%2Fb"),
        ("/ds/dir/", "dir/", "dir/~%"),
        ("/ds/a%5Cb", "a\\b", "~%a%5Cb"),
    ],
)
def test_odd_keys_are_keys_with_escaped_paths(raw: str, key: str, path: str) -> None:
    """S3 keys may hold ``..``, ``//``, a trailing ``/`` or a backslash: each is asked of the
    dataset under its escaped name (tidepool.core.keys), never as a path outside it."""
    op = parse_request("GET", raw)
    assert op.name == "GetObject" and op.key == key
    assert keys.place(op.key, 1).path == path


# ---- listing ----------------------------------------------------------------------------------


def entries(keys: list[str]) -> list[Entry]:
    return [Entry(k, len(k), "e", 0.0) for k in sorted(set(keys))]


def reference(keys: list[str], prefix: str, delimiter: str) -> list[str]:
    """Every key and common prefix S3 would list, in order, without paging."""
    out: list[str] = []
    for k in sorted(set(keys)):
        if not k.startswith(prefix):
            continue
        cut = k.find(delimiter, len(prefix)) if delimiter else -1
        item = k if cut < 0 else k[: cut + len(delimiter)]
        if not out or out[-1] != item:
            out.append(item)
    return out


def walk(keys: list[str], prefix: str, delimiter: str, max_keys: int) -> list[str]:
    got: list[str] = []
    after = ""
    for _ in range(len(keys) + 2):
        page = list_page(entries(keys), prefix, delimiter, after, max_keys)
        assert page.count <= max_keys
        got += [e.key for e in page.contents] + page.common_prefixes
        if not page.truncated:
            return sorted(got)
        assert page.next_after is not None
        after = decode_token(encode_token(page.next_after))
    raise AssertionError("paging did not end")


def test_listing_with_delimiter() -> None:
    keys = ["a/1", "a/2", "b", "c/d/e", "c/x", "ca"]
    page = list_page(entries(keys), "", "/", "", 1000)
    assert [e.key for e in page.contents] == ["b", "ca"]
    assert page.common_prefixes == ["a/", "c/"] and not page.truncated
    page = list_page(entries(keys), "c/", "/", "", 1000)
    assert [e.key for e in page.contents] == ["c/x"] and page.common_prefixes == ["c/d/"]
    page = list_page(entries(keys), "", "/", "", 2)
    assert page.truncated and page.next_after == "b" and page.common_prefixes == ["a/"]
    page = list_page(entries(keys), "", "/", "a/", 2)  # resuming after a common prefix
    assert [e.key for e in page.contents] == ["b"] and page.common_prefixes == ["c/"]
    assert search_root("a/b/c") == "a/b" and search_root("abc") == ""


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.text(alphabet="ab/-é", min_size=1, max_size=8), max_size=30),
    prefix=st.text(alphabet="ab/", max_size=3),
    delimiter=st.sampled_from(["", "/", "b", "a/"]),
    max_keys=st.integers(1, 6),
)
def test_paging_lists_everything_once(
    keys: list[str], prefix: str, delimiter: str, max_keys: int
) -> None:
    assert walk(keys, prefix, delimiter, max_keys) == sorted(reference(keys, prefix, delimiter))


# ---- GET planning ------------------------------------------------------------------------------

MTIME = float(calendar.timegm((2024, 1, 2, 3, 4, 5))) + 0.25
INFO: dict[str, Any] = {"size": 1000, "version": "abc123", "mtime": MTIME, "type": "file"}
BEFORE, AT, AFTER = (formatdate(MTIME + d, usegmt=True) for d in (-10, 0, 10))


def plan(**headers: str) -> tuple[int, int, int, dict[str, str]]:
    p = plan_get(INFO, "x.json", {k.replace("_", "-"): v for k, v in headers.items()})
    return p.status, p.start, p.end, p.headers


def test_plain_and_ranged_get() -> None:
    status, start, end, headers = plan()
    assert (status, start, end) == (200, 0, 1000)
    assert headers["ETag"] == '"abc123"' and headers["Content-Length"] == "1000"
    assert headers["Last-Modified"] == "Tue, 02 Jan 2024 03:04:05 GMT"
    assert headers["Content-Type"] == "application/json"
    assert plan(range="bytes=10-19")[:3] == (206, 10, 20)
    assert plan(range="bytes=990-5000")[3]["Content-Range"] == "bytes 990-999/1000"
    assert plan(range="bytes=-10")[:3] == (206, 990, 1000)
    assert plan(range="bytes=5-2")[:3] == (200, 0, 1000)  # malformed: ignored, as S3 does
    assert plan(range="items=0-1")[:3] == (200, 0, 1000)
    with pytest.raises(S3Error) as err:
        plan(range="bytes=1000-")
    assert (err.value.status, err.value.code) == (416, "InvalidRange")
    assert err.value.headers["Content-Range"] == "bytes */1000"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"if_none_match": '"abc123"'}, 304),
        ({"if_none_match": '"other", W/"abc123"'}, 304),
        ({"if_none_match": "*"}, 304),
        ({"if_none_match": '"other"'}, 200),
        ({"if_none_match": '"other"', "if_modified_since": AFTER}, 200),
        ({"if_modified_since": AT}, 304),
        ({"if_modified_since": AFTER}, 304),
        ({"if_modified_since": BEFORE}, 200),
        ({"if_modified_since": "not a date"}, 200),
        ({"if_match": '"abc123"'}, 200),
        ({"if_match": '"abc123"', "if_unmodified_since": BEFORE}, 200),
        ({"if_match": '"other"'}, 412),
        ({"if_unmodified_since": BEFORE}, 412),
        ({"if_unmodified_since": AT}, 200),
        ({"if_match": '"other"', "if_none_match": '"abc123"'}, 412),
    ],
)
def test_conditions(headers: dict[str, str], status: int) -> None:
    try:
        got = plan(**headers)[0]
    except S3Error as err:
        assert err.code == "PreconditionFailed"
        got = err.status
    assert got == status


def test_response_overrides() -> None:
    p = plan_get(INFO, "x", {}, {"response-content-type": "text/csv", "other": "1"})
    assert p.headers["Content-Type"] == "text/csv"


# ---- error table and XML ----------------------------------------------------------------------


def test_error_table() -> None:
    cases = [
        (FileNotFoundError(2, "gone", "p"), 404, "NoSuchKey"),
        (UnknownDatasetError("x", []), 404, "NoSuchBucket"),
        (OriginUnavailableError("ds", "p", "down"), 503, "ServiceUnavailable"),
        (ConnectionError("worker down"), 503, "ServiceUnavailable"),
        (RuntimeError("token=hunter2"), 500, "InternalError"),
    ]
    for exc, status, code in cases:
        err = s3_error(exc)
        assert (err.status, err.code) == (status, code)
    assert "hunter2" not in s3_error(RuntimeError("secret=hunter2")).message


@pytest.fixture(scope="module")
def parser() -> tuple[RestXMLParser, ServiceModel]:
    model = ServiceModel(Loader().load_service_model("s3", "service-2"), "s3")
    return RestXMLParser(), model


def parse(parser: tuple[RestXMLParser, ServiceModel], op: str, body: bytes) -> Any:
    p, model = parser
    shape = model.operation_model(op).output_shape
    reply = {"body": body, "headers": {}, "status_code": 200}
    return p.parse(reply, shape)


def test_xml_read_by_botocore(parser: tuple[RestXMLParser, ServiceModel]) -> None:
    buckets = parse(parser, "ListBuckets", xml.list_buckets_xml(["a", "b&c"], MTIME))
    assert [b["Name"] for b in buckets["Buckets"]] == ["a", "b&c"]
    params = ListParams(prefix="p/", delimiter="/", max_keys=2, token="tok", url_encoding=True)
    keys = ["p/a b.txt", "p/ü+&<.bin", "p/z/1"]  # sorted: "p/a b.txt" < "p/z/" < "p/ü…"
    page = list_page(entries(keys), "p/", "/", "", 2)
    out = parse(parser, "ListObjectsV2", xml.list_objects_xml("ds", params, page, v2=True))
    assert [c["Key"] for c in out["Contents"]] == ["p/a%20b.txt"]
    assert out["CommonPrefixes"] == [{"Prefix": "p/z/"}]
    assert out["IsTruncated"] is True and out["KeyCount"] == 2
    assert out["Contents"][0]["ETag"] == '"e"'
    after = decode_token(out["NextContinuationToken"])
    page = list_page(entries(keys), "p/", "/", after, 2)
    raw = xml.list_objects_xml("ds", params, page, v2=False)
    out = parse(parser, "ListObjects", raw)
    assert [c["Key"] for c in out["Contents"]] == ["p/%C3%BC%2B%26%3C.bin"]
    assert "CommonPrefixes" not in out and out["IsTruncated"] is False


def test_xml_shapes() -> None:
    ns = {"s3": xml.NS}
    root = ET.fromstring(xml.location_xml("eu-west-1"))
    assert root.tag == f"{{{xml.NS}}}LocationConstraint" and root.text == "eu-west-1"
    assert ET.fromstring(xml.location_xml("us-east-1")).text is None
    page = list_page([Entry("k", 5, "md5", MTIME)], "", "", "", 10)
    root = ET.fromstring(xml.list_objects_xml("ds", ListParams(), page, v2=True))
    assert root.findtext("s3:Contents/s3:LastModified", namespaces=ns) == (
        "2024-01-02T03:04:05.250Z"
    )
    assert root.findtext("s3:Contents/s3:ETag", namespaces=ns) == '"md5"'
    err = ET.fromstring(xml.error_xml("NoSuchKey", "gone <", "/ds/k", "RID", {"Key": "k"}))
    assert [c.tag for c in err] == ["Code", "Message", "Key", "Resource", "RequestId"]
    assert err.findtext("Message") == "gone <"
    assert xml.text("a\x01b&") == "a&#x1;b&amp;"


# ---- strong If-Match, partNumber (issue 14 item 7) ---------------------------------------------

PLAIN = {"size": 10, "version": "abc", "mtime": 0.0}


def test_if_match_compares_strongly_and_if_none_match_weakly() -> None:
    with pytest.raises(S3Error) as err:
        plan_get(PLAIN, "k", {"if-match": 'W/"abc"'})
    assert err.value.status == 412
    assert plan_get(PLAIN, "k", {"if-match": 'W/"x", "abc"'}).status == 200
    assert plan_get(PLAIN, "k", {"if-none-match": 'W/"abc"'}).status == 304


def test_part_numbers_of_a_plain_object() -> None:
    plan = plan_get(PLAIN, "k", {}, None, part_number({"partNumber": "1"}))
    assert (plan.status, plan.start, plan.end) == (206, 0, 10)
    assert plan.headers["Content-Range"] == "bytes 0-9/10"
    with pytest.raises(S3Error) as err:
        plan_get(PLAIN, "k", {}, None, 2)
    assert (err.value.status, err.value.code) == (416, "InvalidPartNumber")
    with pytest.raises(S3Error) as err:
        plan_get(PLAIN, "k", {"range": "bytes=0-1"}, None, 1)
    assert err.value.code == "InvalidRequest"
    for bad in ("0", "10001", "x", "²"):
        with pytest.raises(S3Error) as err:
            part_number({"partNumber": bad})
        assert err.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as err:
        plan_get({**PLAIN, "version": "abc-3"}, "k", {}, None, 4)
    assert err.value.code == "InvalidPartNumber"

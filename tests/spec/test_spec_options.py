"""Option mapping: mount URL + Alluxio-style keys -> fsspec protocol, root, storage options."""

from __future__ import annotations

from typing import Any

import pytest

from tidepool.spec import FieldErrors, Mount, OptionError, map_options, mount_config
from tidepool.spec.options import CHECKSUM_CONFIG

CHECKSUMS = dict(CHECKSUM_CONFIG)


@pytest.mark.parametrize(
    ("url", "options", "protocol", "root", "storage"),
    [
        ("s3://bucket/prefix/", {}, "s3", "bucket/prefix", {"config_kwargs": CHECKSUMS}),
        ("s3://bucket", {}, "s3", "bucket", {"config_kwargs": CHECKSUMS}),
        (
            "s3://b/p",
            {
                "fs.s3a.endpoint": "https://minio:9000",
                "fs.s3a.access.key": "AK",
                "fs.s3a.secret.key": "SK",
            },
            "s3",
            "b/p",
            {
                "endpoint_url": "https://minio:9000",
                "key": "AK",
                "secret": "SK",
                "config_kwargs": CHECKSUMS,
            },
        ),
        (
            "s3://b",
            {
                "alluxio.underfs.s3.endpoint": "http://127.0.0.1:9000",
                "aws.accessKeyId": "AK",
                "aws.secretKey": "SK",
                "alluxio.underfs.s3.disable.dns.buckets": "true",
                "alluxio.underfs.s3.region": "eu-west-1",
            },
            "s3",
            "b",
            {
                "endpoint_url": "http://127.0.0.1:9000",
                "key": "AK",
                "secret": "SK",
                "client_kwargs": {"region_name": "eu-west-1"},
                "config_kwargs": {**CHECKSUMS, "s3": {"addressing_style": "path"}},
            },
        ),
        (
            "s3://b",
            {
                "s3a.accessKeyId": "AK",
                "s3a.secretKey": "SK",
                "fs.s3a.path.style.access": "false",
                "fs.s3a.endpoint.region": "r1",
            },
            "s3",
            "b",
            {
                "key": "AK",
                "secret": "SK",
                "client_kwargs": {"region_name": "r1"},
                "config_kwargs": CHECKSUMS,
            },
        ),
        (
            "s3://b",
            {
                "endpoint_url": "http://x:1",
                "anon": "true",
                "client_kwargs": '{"verify": false}',
                "default_block_size": "1048576",
            },
            "s3",
            "b",
            {
                "endpoint_url": "http://x:1",
                "anon": True,
                "client_kwargs": {"verify": False},
                "default_block_size": "1048576",
                "config_kwargs": CHECKSUMS,
            },
        ),
        (
            "oss://test-fluid/images/images/",
            {
                "fs.oss.endpoint": "oss-cn-beijing.aliyuncs.com",
                "fs.oss.accessKeyId": "AK",
                "fs.oss.accessKeySecret": "SK",
            },
            "s3",
            "test-fluid/images/images",
            {
                "endpoint_url": "https://oss-cn-beijing.aliyuncs.com",
                "key": "AK",
                "secret": "SK",
                "config_kwargs": {**CHECKSUMS, "s3": {"addressing_style": "virtual"}},
            },
        ),
        ("https://host/data/x.csv", {}, "https", "https://host/data/x.csv", {}),
        (
            "http://host:8080/d/",
            {"block_size": "0"},
            "http",
            "http://host:8080/d/",
            {"block_size": "0"},
        ),
        ("local:///mnt/data/", {}, "file", "/mnt/data", {}),
        ("file:///mnt/data", {}, "file", "/mnt/data", {}),
        ("/mnt/data", {}, "file", "/mnt/data", {}),
        ("local:///", {}, "file", "/", {}),
    ],
)
def test_mapping_table(
    url: str, options: dict[str, str], protocol: str, root: str, storage: dict[str, Any]
) -> None:
    origin = map_options(url, options)
    assert (origin.protocol, origin.root, origin.storage_options) == (protocol, root, storage)


@pytest.mark.parametrize(
    ("url", "options", "key", "fragment"),
    [
        ("hdfs://nn/x", {}, None, "supported: s3://, oss://"),
        ("pvc://claim", {}, None, "local:///path"),
        ("relative/dir", {}, None, "not a URL or an absolute path"),
        ("s3://", {}, None, "names no bucket"),
        ("local://rel", {}, None, "write local:///dir/sub"),
        ("oss://b/p", {}, None, "need option fs.oss.endpoint"),
        ("s3://b", {"fs.s3a.bogus": "1"}, "fs.s3a.bogus", "known keys: fs.s3a.endpoint"),
        (
            "oss://b",
            {"fs.oss.endpoint": "e", "fs.s3a.endpoint": "x"},
            "fs.s3a.endpoint",
            "known keys: fs.oss.endpoint",
        ),
        ("https://h/x", {"a.b": "1"}, "a.b", "passed to fsspec unchanged"),
        (
            "s3://b",
            {"fs.s3a.path.style.access": "maybe"},
            "fs.s3a.path.style.access",
            "true or false",
        ),
        ("s3://b", {"key": "A", "fs.s3a.access.key": "B"}, "fs.s3a.access.key", "keep one"),
        ("s3://b", {"client_kwargs": "[1]"}, "client_kwargs", "JSON object"),
        # an S3 endpoint without a scheme: https was assumed silently and failed at first read
        (
            "s3://b",
            {"fs.s3a.endpoint": "127.0.0.1:19731"},
            "fs.s3a.endpoint",
            "has no scheme: write http://127.0.0.1:19731 or https://127.0.0.1:19731",
        ),
        ("s3://b", {"endpoint_url": "minio:9000"}, "endpoint_url", "write http://minio:9000"),
        ("s3://b", {"fs.s3a.endpoint": "ftp://h:1"}, "fs.s3a.endpoint", "http:// or https://"),
    ],
)
def test_mapping_errors(url: str, options: dict[str, str], key: str | None, fragment: str) -> None:
    with pytest.raises(OptionError) as info:
        map_options(url, options)
    assert any(k == key and fragment in m for k, m in info.value.problems), info.value.problems


@pytest.mark.parametrize("url", ["s3://AK:SK@bucket/p", "https://user:pw@host/x"])
def test_credentials_in_url_are_refused_without_echo(url: str) -> None:
    with pytest.raises(OptionError) as info:
        map_options(url, {})
    assert "SK" not in str(info.value) and "pw" not in str(info.value)


def mount(**fields: Any) -> Mount:
    return Mount.model_validate(fields)


def no_secrets(name: str, key: str) -> str:
    raise LookupError(f"no secret {name}/{key}")


def test_mount_config_defaults_and_secrets() -> None:
    m = mount(
        mountPoint="s3://b/p",
        name="train",
        options={"fs.s3a.endpoint": "https://h:9000"},
        encryptOptions=[
            {"name": "fs.s3a.secret.key", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ],
    )
    config = mount_config("ds", m, lambda name, key: f"value-of-{name}-{key}")
    assert (config.name, config.path, config.url) == ("train", "train", "s3://b/p")
    assert config.storage_options["secret"] == "value-of-s-k"
    assert config.secret_values == ("value-of-s-k",)


def test_plain_credentials_count_as_secrets() -> None:
    config = mount_config(
        "ds", mount(mountPoint="s3://b", name="x", options={"key": "AKID"}), no_secrets
    )
    assert config.secret_values == ("AKID",)


def test_shared_options_apply_and_mount_options_win() -> None:
    m = mount(mountPoint="s3://b", name="x", options={"fs.s3a.endpoint": "https://mine:1"})
    config = mount_config(
        "ds",
        m,
        no_secrets,
        shared_options={"fs.s3a.endpoint": "https://shared:1", "fs.s3a.endpoint.region": "r"},
    )
    assert config.storage_options["endpoint_url"] == "https://mine:1"
    assert config.storage_options["client_kwargs"] == {"region_name": "r"}


def test_mount_config_problem_locations() -> None:
    m = mount(
        mountPoint="s3://b",
        name="x",
        path="/a/../..",
        options={"fs.s3a.nope": "1"},
        encryptOptions=[{"name": "key", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    )
    with pytest.raises(FieldErrors) as info:
        mount_config("ds", m, no_secrets, loc=("spec", "mounts", 3))
    locs = [loc for loc, _ in info.value.problems]
    assert ("spec", "mounts", 3, "encryptOptions", 0, "valueFrom", "secretKeyRef") in locs
    assert ("spec", "mounts", 3, "path") in locs
    assert ("spec", "mounts", 3, "options", "fs.s3a.nope") in locs

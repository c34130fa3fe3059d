"""Secret values never reach an error, a notice, a repr or describe() output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidepool.core.errors import SpecError
from tidepool.spec import describe, load_files, load_text

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "seed-demo.yaml"
KEY_ID, KEY_SECRET = "LTAI-fake-key-id-7f3a", "fake-oss-secret-9b2c"
SECRETS = (KEY_ID, KEY_SECRET)


def assert_clean(text: str) -> None:
    for value in SECRETS:
        assert value not in text


def test_describe_hides_secret_values() -> None:
    bundle = load_files([SEED, FIXTURES / "mysecret.yaml"], environ={})
    text = describe(bundle)
    assert_clean(text)
    assert "fs.oss.accessKeyId: *** (secret mysecret)" in text
    assert "fs.oss.endpoint: oss-cn-beijing.aliyuncs.com" in text
    assert (
        "oss://test-fluid/images/images/" in text and "np763275de88194dabbb34b86ffaa2615e" in text
    )
    assert "SSD /mnt/images: 10.0 GiB, evict from 99% down to 80%" in text
    assert "page size: 1.0 MiB" in text and "metadata TTL: 60s" in text
    assert "document 3 (Pod resnet) skipped" in text
    assert_clean(repr(bundle.datasets))
    assert_clean(repr(bundle.secrets))
    assert_clean("\n".join(bundle.notices))


def test_describe_hides_plain_credentials() -> None:
    text = """\
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: ds}
spec:
  mounts:
    - mountPoint: s3://b/p
      name: p
      options: {fs.s3a.access.key: LTAI-fake-key-id-7f3a, fs.s3a.secret.key: fake-oss-secret-9b2c}
"""
    out = describe(load_text(text, environ={}))
    assert_clean(out)
    assert "fs.s3a.secret.key: ***" in out


def errors_of(*paths: Path, text: str = "") -> str:
    with pytest.raises(SpecError) as info:
        if text:
            load_text(text, "x.yaml", environ={})
        else:
            load_files(list(paths), environ={})
    return str(info.value) + "\n".join(info.value.problems)


def test_errors_in_other_documents_do_not_echo_secrets() -> None:
    broken = SEED.read_text().replace("quota: 10Gi", "quota: 10Gx")
    secret = (FIXTURES / "mysecret.yaml").read_text()
    # the secret is also (mis)used as a plain option and as a bad value elsewhere
    broken = broken.replace(
        "fs.oss.endpoint: oss-cn-beijing.aliyuncs.com",
        f"fs.oss.endpoint: oss-cn-beijing.aliyuncs.com\n        fs.oss.bogus: {KEY_SECRET}",
    )
    out = errors_of(text=broken + "---\n" + secret)
    assert "quota" in out and "fs.oss.bogus" in out
    assert_clean(out)


def test_bad_secret_document_does_not_echo_values() -> None:
    text = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: s}}
data:
  k: {KEY_SECRET}!!
stringData:
  other: [{KEY_ID}]
  extra: {{nested: {KEY_ID}}}
"""
    out = errors_of(text=text)
    assert "data" in out and "stringData" in out
    assert_clean(out)


def test_yaml_error_in_secret_does_not_quote_the_line() -> None:
    text = (
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData:\n  k: {KEY_SECRET}: x\n"
    )
    out = errors_of(text=text)
    assert "x.yaml:5:" in out and "invalid YAML" in out
    assert_clean(out)


def test_secret_file_values_redacted_from_other_errors(tmp_path: Path) -> None:
    (tmp_path / "fs.oss.accessKeyId").write_text(KEY_ID)
    (tmp_path / "fs.oss.accessKeySecret").write_text(KEY_SECRET)
    text = SEED.read_text().replace("path: /mnt/images", f"path: {KEY_SECRET}")
    (tmp_path / "spec.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        load_files([tmp_path / "spec.yaml"], secrets_dir=tmp_path, environ={})
    assert "not an absolute directory" in str(info.value)
    assert_clean(str(info.value))


def test_describe_keeps_a_tier_path_named_like_the_access_key(tmp_path: Path) -> None:
    """Redaction is by exact value: a directory named like the access key id is a path, not a
    leaked secret, and prints intact (it used to become ``/mnt/***/cache``)."""
    (tmp_path / "fs.oss.accessKeyId").write_text("images")
    (tmp_path / "fs.oss.accessKeySecret").write_text(KEY_SECRET)
    (tmp_path / "spec.yaml").write_text(SEED.read_text())
    bundle = load_files([tmp_path / "spec.yaml"], secrets_dir=tmp_path, environ={})
    text = describe(bundle)
    assert "SSD /mnt/images: 10.0 GiB" in text
    assert "oss://test-fluid/images/images/" in text
    assert "fs.oss.accessKeyId: *** (secret mysecret)" in text
    assert KEY_SECRET not in text

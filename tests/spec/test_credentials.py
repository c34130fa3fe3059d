"""Secrets from files and the environment; a secret flag still works and warns about ps."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from tidepool.core.errors import ConfigError
from tidepool.spec.credentials import (
    MAX_SECRET_FILE,
    add_secret_args,
    read_secret_file,
    resolve_secret,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_secret_args(p, "token", "TIDEPOOL_TOKEN", "bearer token")
    return p.parse_args(argv)


def _resolve(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    return resolve_secret(args.token, args.token_file, environ, name="token", env="TIDEPOOL_TOKEN")


def test_file_env_and_flag(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "token"
    f.write_text("  s3cret-from-file \n")
    f.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert _resolve(_parse(["--token-file", str(f)]), {}) == "s3cret-from-file"
        assert _resolve(_parse([]), {"TIDEPOOL_TOKEN": "from-env"}) == "from-env"
        assert _resolve(_parse([]), {"TIDEPOOL_TOKEN_FILE": str(f)}) == "s3cret-from-file"
        assert _resolve(_parse([]), {}) is None
    assert not caplog.records  # none of these is visible in ps
    with caplog.at_level(logging.WARNING):
        assert _resolve(_parse(["--token", "on-the-line"]), {}) == "on-the-line"
    assert "visible to every local user in ps" in caplog.text
    assert "on-the-line" not in caplog.text


def test_bad_files_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"cannot read --token-file .*missing"):
        read_secret_file(tmp_path / "missing", "--token-file")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_secret_file(empty, "--token-file")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_FILE + 1))
    with pytest.raises(ConfigError, match="at most"):
        read_secret_file(big, "--token-file")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret_file(tmp_path, "--token-file")
    shared = tmp_path / "shared"
    shared.write_text("value\n")
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_secret_file(shared, "--token-file") == "value"
    assert "chmod 600" in caplog.text and "value" not in caplog.text.replace(str(shared), "")
    f = tmp_path / "t"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not both"):
        _resolve(_parse(["--token", "a", "--token-file", str(f)]), {})

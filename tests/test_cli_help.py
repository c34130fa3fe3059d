"""Every flag of every ``tidepool`` command has help text, and says its default.

A default that comes from the environment is shown for plain settings, never for a secret
(``--token`` shows "default none" even when ``TIDEPOOL_TOKEN`` is set).
"""

from __future__ import annotations

import argparse

import pytest

from tidepool.cli import build_parser

SECRET = "tok-very-secret-123"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


@pytest.fixture
def parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    monkeypatch.setenv("TIDEPOOL_TOKEN", SECRET)
    return build_parser()


def test_every_flag_has_help_and_names_its_default(parser: argparse.ArgumentParser) -> None:
    missing: list[str] = []
    commands = {"tidepool": parser, **_subparsers(parser)}
    for name, sub in commands.items():
        for action in _flags(sub):
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            text = action.help or ""
            if not text or text == argparse.SUPPRESS:
                missing.append(f"{label}: no help")
                continue
            silent = action.default in (None, False, [], (), argparse.SUPPRESS, "")
            if not silent and not action.option_strings and action.nargs in ("*", "?"):
                silent = False
            if not silent and "default" not in text.lower():
                missing.append(f"{label}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("command", ["up", "status", "load", "ls", "cat", "refresh", "mount"])
def test_help_never_shows_the_token(
    parser: argparse.ArgumentParser, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert SECRET not in text
    assert "default" in text


def test_up_help_shows_port_and_state_dir(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--port PORT TCP port" in text and "default 8433" in text
    assert "--state-dir STATE_DIR" in text and "default ~/.local/state/tidepool" in text

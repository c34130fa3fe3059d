"""Errors a newcomer hits by accident get a hint, not just a type complaint."""

from __future__ import annotations

import pytest

from tidepool.core.errors import SpecError
from tidepool.spec import load_text


def test_unquoted_yaml_boolean_name_gets_a_hint() -> None:
    text = (
        "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {name: off}\n"
        "spec:\n  mounts:\n    - {mountPoint: 'local:///tmp/x', name: data}\n"
    )
    with pytest.raises(SpecError) as info:
        load_text(text, "bool.yaml")
    message = str(info.value)
    assert "metadata.name" in message and "got False" in message
    assert "quote the value" in message

"""Client side: the fsspec filesystem for ``tidepool://`` and its same-host fast path."""

from __future__ import annotations

from tidepool.client.fs import TidepoolFile, TidepoolFileSystem

__all__ = ["TidepoolFile", "TidepoolFileSystem"]

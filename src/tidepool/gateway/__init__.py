"""The S3-compatible gateway: datasets served as read-only buckets to boto3, s3fs and the aws CLI.

Layers inside the package: pure parsing and policy (:mod:`.sigv4`, :mod:`.operations`,
:mod:`.listing`, :mod:`.objects`, :mod:`.xml`, :mod:`.errors`) under the aiohttp server
(:mod:`.server`) under the command line (:mod:`.cli`). The server reads through the fsspec client,
never through worker internals.
"""

from __future__ import annotations

from tidepool.gateway.errors import S3Error
from tidepool.gateway.server import Gateway

__all__ = ["Gateway", "S3Error"]

"""The lab beside the runtime: a real S3 server, WAN emulators, network-namespace hosts, the
demo and the benchmarks.

Nothing in :mod:`tidepool` imports this package (import-linter enforces it); the ``tidepool demo``
and ``tidepool bench`` commands load it by name when they run.
"""

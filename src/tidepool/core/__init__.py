"""The pure core: data, arithmetic and policy that every other layer shares. No I/O here.

``errors`` (the one error family and its cross-surface table), ``paths``, ``ranges``, ``pages``
(page identity and the on-disk page header), ``quantity``, ``fileinfo``, ``ring`` (rendezvous
placement), ``breaker`` (circuit-breaker state). Enforced by import-linter: the core imports
nothing from the rest of the package and no network or database library.
"""

"""Parse Kubernetes resource quantities (``10Gi``, ``512Mi``, ``1G``, ``100k``) into bytes."""

from __future__ import annotations

import re

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{0,2})\s*$")


def parse_bytes(value: str | int | float) -> int:
    """Bytes for a quantity; raises ``ValueError`` naming the value and the valid forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; use a number of bytes or a quantity like 10Gi")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"size {value!r} is negative")
        return int(value)
    m = _QUANTITY.match(str(value))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(
            f"{value!r} is not a size; use bytes or a quantity like 512Mi, 10Gi, 1G "
            f"(suffixes: {', '.join(s for s in _SUFFIX if s)})"
        )
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])


def format_bytes(n: float) -> str:
    """Human-readable binary size (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

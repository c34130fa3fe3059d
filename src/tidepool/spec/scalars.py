"""Scalar values of the spec: sizes, durations, names and YAML scalars read as strings.

Fluid manifests spell sizes as Kubernetes quantities (``10Gi``) or Alluxio sizes (``1MB``), and
durations as seconds or strings (``5m``); YAML turns unquoted ``true``/``1`` into non-strings where
Kubernetes string maps expect text. These pure parsers turn such values into ints, floats and
strings, and the ``Annotated`` types wire them into the models as ``BeforeValidator``s.

Every parser raises ``ValueError`` (and nothing else) with a message naming the valid forms, so
pydantic reports it against the field it came from. Limits: durations stop at days (``d``), with no
month or year units; Alluxio sizes are read with binary units only.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, SecretStr

from tidepool.core.quantity import parse_bytes

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ALLUXIO_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)b?\s*$", re.IGNORECASE)


def parse_size(value: object, *, alluxio: bool = False) -> int:
    """Bytes from a K8s quantity (``10Gi``), an Alluxio size (``1MB``: binary units) or a number.

    With ``alluxio=True`` a bare ``1M``/``64k`` is binary too, as Alluxio reads its properties;
    otherwise it follows Kubernetes (``1M`` is 10**6 bytes).
    """
    if isinstance(value, str):
        m = _ALLUXIO_SIZE.match(value)
        if m and (alluxio or value.strip()[-1] in "bB"):
            scale = 1024 ** " kmgtp".index(m.group(2).lower() or " ")
            return int(float(m.group(1)) * scale)
    return quantity(value)


def quantity(value: object) -> int:
    """Bytes from a K8s quantity; ``ValueError`` (never anything else) naming the valid forms."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a size; use a quantity like 10Gi")
    if not isinstance(value, str | int | float):
        raise ValueError(f"a {type(value).__name__} is not a size; use a quantity like 10Gi")
    try:
        return parse_bytes(value)
    except OverflowError as exc:
        raise ValueError(f"{value!r} is too large a size") from exc


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string (``90``, ``60s``, ``5m``, ``1h30m``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a duration; use seconds or a string like 60s, 5m, 1h")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"{value!r} is not a duration; use seconds or a string like 60s, 5m, 1h30m"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {value!r} must be a finite number of seconds >= 0")
    return seconds


def _to_str(value: object) -> object:
    """YAML scalars as strings, the way Kubernetes string maps read them (``true`` -> "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def dns_label(value: str) -> str:
    """``value`` if it is a DNS-1123 label (a Dataset or runtime name, used as a directory)."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value[:80]!r} is not a valid name: use at most 63 lowercase letters, digits and "
            "'-', starting and ending with a letter or digit (it becomes a directory name)"
        )
    return value


Size = Annotated[int, BeforeValidator(quantity)]
Str = Annotated[str, BeforeValidator(_to_str)]
StrMap = dict[str, Str]
SecretValue = Annotated[SecretStr, BeforeValidator(_to_str)]

"""Just enough of a kubelet to run a rendered container as a local process.

No kubelet can run here, so the operator's rendered Pods are run the way a kubelet would start
their containers, from the manifest alone: the image's entrypoint (``tidepool``) or the
container's ``command``; ``env`` with ``value`` (``$(VAR)`` expanded from earlier entries),
``fieldRef`` (downward API, from ``fields``) and ``secretKeyRef`` / ``configMapKeyRef`` (from the
given objects); ``args`` with ``$(VAR)`` expanded; and volumes: a ConfigMap's or Secret's keys
become files, ``emptyDir`` a fresh directory, ``hostPath`` its path. A process has no container
filesystem, so a path inside a ``volumeMount`` (in args and env) is rewritten to where that volume
lives on this host; the tests pick host paths under their temporary directory.
"""

from __future__ import annotations

import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_ENTRYPOINT = [sys.executable, "-m", "tidepool.cli"]
"""The image's ``ENTRYPOINT ["tini", "--", "tidepool"]``, as this test process runs it."""


@dataclass
class Process:
    argv: list[str]
    env: dict[str, str]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"the Pod refers to {kind} {name!r}, which nothing creates")


def _data(obj: dict[str, Any]) -> dict[str, str]:
    out = dict(obj.get("stringData") or {})
    for k, v in (obj.get("data") or {}).items():
        out[k] = base64.b64decode(v).decode() if obj["kind"] == "Secret" else v
    return out


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def container_process(
    pod: dict[str, Any],
    name: str,
    *,
    objects: list[dict[str, Any]],
    fields: dict[str, str],
    volumes_dir: Path,
) -> Process:
    """The argv and environment a kubelet would start container ``name`` of ``pod`` with."""
    container = next(c for c in pod["containers"] if c["name"] == name)
    # volumes: where each lives on this host
    sources: dict[str, Path] = {}
    for vol in pod.get("volumes", []):
        vname = vol["name"]
        if "hostPath" in vol:
            sources[vname] = Path(vol["hostPath"]["path"])
            continue
        path = volumes_dir / vname
        path.mkdir(parents=True, exist_ok=True)
        ref = vol.get("configMap") or vol.get("secret")
        if ref is not None:
            kind = "ConfigMap" if "configMap" in vol else "Secret"
            ref_name = ref.get("name") or ref.get("secretName")
            for key, value in _data(_find(objects, kind, ref_name)).items():
                (path / key).write_text(value)
        sources[vname] = path
    mounts = sorted(
        ((m["mountPath"], sources[m["name"]]) for m in container.get("volumeMounts", [])),
        key=lambda item: len(item[0]),
        reverse=True,
    )

    def in_host(text: str) -> str:
        if text.startswith("--") and "=" in text:  # --flag=PATH, as render quotes values
            flag, _, value = text.partition("=")
            return f"{flag}={in_host(value)}"
        for inside, outside in mounts:
            if text == inside or text.startswith(inside + "/"):
                return str(outside) + text[len(inside) :]
        return text

    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = _data(_find(objects, "Secret", ref["name"]))[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = _data(_find(objects, "ConfigMap", ref["name"]))[ref["key"]]
        else:
            raise AssertionError(f"env source {source} is not emulated")
    command = container.get("command")
    if command:
        head = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    else:
        head = list(IMAGE_ENTRYPOINT)
    args = [in_host(_expand(a, env)) for a in container.get("args", [])]
    return Process([*head, *args], {k: in_host(v) for k, v in env.items()})

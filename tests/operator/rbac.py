"""Is every API call the tests saw allowed by the RBAC rules we ship?

The fake API server (kmock) records each request. A request's User-Agent names the component
(``kopf/…`` and ``tidepool-operator/…`` for the operator, ``tidepool-reporter/…``,
``tidepool-load/…``, ``tidepool-members/…`` for what runs in the pools); its method and path give
the RBAC verb, API group, resource and subresource, exactly as the API server's authorizer derives
them. Each is checked against the rules of the Role that component runs under: the chart's
ClusterRole for the operator, the rendered per-dataset Roles of the workers and of the load Jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPERATOR_AGENTS = ("kopf/", "tidepool-operator/")
WORKER_AGENTS = ("tidepool-reporter/", "tidepool-members/")
LOAD_AGENTS = ("tidepool-load/",)


@dataclass(frozen=True)
class Call:
    agent: str
    verb: str
    group: str
    resource: str
    """``plural`` or ``plural/subresource``, as RBAC rules name it."""
    path: str


def call_of(method: str, path: str, params: Mapping[str, str], agent: str) -> Call | None:
    """The RBAC view of one request; None for discovery and other non-resource paths."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # namespaced: /namespaces/NS/PLURAL[/NAME[/SUB]]
    resource, named = rest[0], len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method.upper())
    if verb is None:
        watch = str(params.get("watch", "")).lower() in ("1", "true")
        verb = "watch" if watch else ("get" if named else "list")
    return Call(agent, verb, group, resource, path)


def calls(requests: Iterable[Any], agents: Sequence[str]) -> list[Call]:
    """The recorded kmock requests made by the given agents."""
    out = []
    for r in requests:
        agent = str(dict(r.headers).get("User-Agent", ""))
        if not agent.startswith(tuple(agents)):
            continue
        call = call_of(
            str(r.method.value if hasattr(r.method, "value") else r.method),
            r.url.path,
            r.params,
            agent,
        )
        if call is not None:
            out.append(call)
    return out


def allowed(rules: Sequence[Mapping[str, Any]], call: Call) -> bool:
    for rule in rules:
        groups, resources, verbs = (
            rule.get("apiGroups", []),
            rule.get("resources", []),
            rule.get("verbs", []),
        )
        if (
            ("*" in groups or call.group in groups)
            and ("*" in resources or call.resource in resources)
            and ("*" in verbs or call.verb in verbs)
        ):
            return True
    return False


def denied(rules: Sequence[Mapping[str, Any]], made: Iterable[Call]) -> list[str]:
    """What the rules would refuse, one line per distinct (agent, verb, group, resource)."""
    seen = set()
    out = []
    for c in made:
        key = (c.agent.split("/")[0], c.verb, c.group, c.resource)
        if key in seen or allowed(rules, c):
            continue
        seen.add(key)
        out.append(f"{key[0]}: {c.verb} {c.group or 'core'}/{c.resource} ({c.path})")
    return out

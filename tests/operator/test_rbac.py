"""The RBAC check the operator tests run after each test (see conftest), checked itself."""

from __future__ import annotations

from .conftest import operator_rules, pool_rules
from .rbac import Call, call_of, denied


def test_requests_map_to_rbac_verbs_and_resources() -> None:
    def view(method: str, path: str, **params: str) -> tuple[str, str, str] | None:
        call = call_of(method, path, params, "tidepool-load/0.1.0")
        return None if call is None else (call.verb, call.group, call.resource)

    assert view("GET", "/api/v1/namespaces") == ("list", "", "namespaces")
    assert view("GET", "/api/v1/namespaces/edge") == ("get", "", "namespaces")
    assert view("GET", "/api/v1/nodes", watch="true") == ("watch", "", "nodes")
    assert view("PATCH", "/apis/batch/v1/namespaces/edge/jobs/warm") == ("patch", "batch", "jobs")
    assert view("PATCH", "/apis/tidepool.io/v1alpha1/namespaces/d/datasets/x/status") == (
        "patch",
        "tidepool.io",
        "datasets/status",
    )
    assert view("POST", "/apis/coordination.k8s.io/v1/namespaces/d/leases") == (
        "create",
        "coordination.k8s.io",
        "leases",
    )
    assert view("GET", "/apis") is None and view("GET", "/version") is None


def test_the_shipped_roles_cover_what_each_component_does() -> None:
    load = Call("tidepool-load/0.1.0", "patch", "batch", "jobs", "/apis/batch/v1/.../jobs/x")
    load_rules = pool_rules("tidepool-images-load")
    assert denied(load_rules, [load]) == []
    # least privilege: the workers may not touch Jobs, the load Jobs nothing else
    assert denied(pool_rules(), [load]) == [
        "tidepool-load: patch batch/jobs (/apis/batch/v1/.../jobs/x)"
    ]
    lease = Call("tidepool-load/0.1.0", "create", "coordination.k8s.io", "leases", "/apis/...")
    assert denied(load_rules, [lease])
    # the workers may not touch what only the operator manages
    sts = Call("tidepool-reporter/0.1.0", "create", "apps", "statefulsets", "/apis/apps/...")
    assert denied(pool_rules(), [sts]) and not denied(operator_rules(), [sts])

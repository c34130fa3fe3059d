"""Membership providers picked by name: ``--members``/``--etcd`` to (name, source), and the one
map from a name to the class that serves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member
from tidepool.pool.etcd import EtcdMembership
from tidepool.pool.kubernetes import KubernetesMembership
from tidepool.pool.membership import PROVIDERS, PoolContext, choose_provider, open_membership
from tidepool.pool.static import StaticMembership

ME = Member(name="w0", address="http://10.0.0.1:8433", pool="p1")


@pytest.mark.parametrize(
    ("members", "etcd", "chosen"),
    [
        ("", (), None),
        ("static:a=http://h:1,b=http://h:2", (), ("static", "a=http://h:1,b=http://h:2")),
        ("http://h:1,h:2", (), ("static", "http://h:1,h:2")),
        ("h:1", (), ("static", "h:1")),
        ("kubernetes:edge/images-worker-p1", (), ("kubernetes", "edge/images-worker-p1")),
        ("etcd:http://e1:2379,http://e2:2379", (), ("etcd", "http://e1:2379,http://e2:2379")),
        ("", ("http://e1:2379", "http://e2:2379"), ("etcd", "http://e1:2379,http://e2:2379")),
        # --etcd wins over a static list, a named provider over --etcd (as before the map)
        ("static:a=http://h:1", ("http://e:2379",), ("etcd", "http://e:2379")),
        ("kubernetes:svc", ("http://e:2379",), ("kubernetes", "svc")),
    ],
)
def test_choose_provider(
    members: str, etcd: tuple[str, ...], chosen: tuple[str, str] | None
) -> None:
    assert choose_provider(members, etcd) == chosen


def test_every_name_opens_its_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEPOOL_KUBE_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("POD_NAMESPACE", "edge")
    context = PoolContext("p1", ME, tmp_path / "members.json", peer_token="peer-secret")
    sources = {"static": "a=http://h:1", "etcd": "http://e:2379, ", "kubernetes": "svc"}
    assert set(sources) == set(PROVIDERS)

    static = open_membership("static", sources["static"], context)
    assert isinstance(static, StaticMembership)
    assert static.members() == [Member(name="a", address="http://h:1", pool="p1")]

    etcd = open_membership("etcd", sources["etcd"], context)
    assert isinstance(etcd, EtcdMembership)
    assert (etcd.endpoints, etcd.pool, etcd.me) == (["http://e:2379"], "p1", ME)

    kube = open_membership("kubernetes", sources["kubernetes"], context)
    assert isinstance(kube, KubernetesMembership)
    assert (kube.namespace, kube.service, kube.pool) == ("edge", "svc", "p1")
    assert kube.config.server == "http://127.0.0.1:9"


def test_unknown_or_incomplete_sources_say_what_is_valid(tmp_path: Path) -> None:
    context = PoolContext("p1", ME, None)
    with pytest.raises(ConfigError, match="'consul'; valid: etcd, kubernetes, static"):
        open_membership("consul", "http://c:8500", context)
    with pytest.raises(ConfigError, match="peer credential"):
        open_membership("etcd", "http://e:2379", context)
    with pytest.raises(ConfigError, match="is empty"):
        open_membership("static", "", context)

"""Property: whatever YAML-ish input arrives, the loader answers with a bundle or a SpecError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidepool.core.errors import SpecError
from tidepool.spec import SpecBundle, load_text

FIXTURES = Path(__file__).parent / "fixtures"
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "spec",
        "mounts",
        "mountPoint",
        "options",
        "encryptOptions",
        "valueFrom",
        "secretKeyRef",
        "key",
        "path",
        "tieredstore",
        "levels",
        "mediumtype",
        "quota",
        "quotaList",
        "high",
        "low",
        "replicas",
        "pageSize",
        "properties",
        "data",
        "stringData",
        "dataset",
        "target",
        "policy",
        "schedule",
        "nodeAffinity",
        "metadataSyncPolicy",
        "ttl",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "Dataset",
            "AlluxioRuntime",
            "CacheRuntime",
            "DataLoad",
            "Secret",
            "v1",
            "data.fluid.io/v1alpha1",
            "tidepool.io/v1alpha1",
            "SSD",
            "MEM",
            "10Gi",
            "s3://b/p",
            "oss://b",
            "local:///x",
            "/",
            "0.9",
            "Cron",
            "images",
        ]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.integers(0, 3)), children, max_size=5),
    ),
    max_leaves=25,
)
DOC_HEAD = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["data.fluid.io/v1alpha1", "tidepool.io/v1alpha1", "v1"]),
        "kind": st.sampled_from(
            ["Dataset", "AlluxioRuntime", "CacheRuntime", "DataLoad", "Secret"]
        ),
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(["images", "x"])}),
    },
    optional={"spec": TREES, "data": TREES, "stringData": TREES},
)


def check(text: str) -> None:
    try:
        result = load_text(text, "fuzz.yaml", environ={})
    except SpecError as exc:
        assert exc.problems
    else:
        assert isinstance(result, SpecBundle)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(TREES, DOC_HEAD), max_size=3))
def test_loader_only_raises_spec_error(documents: list[Any]) -> None:
    check(yaml.dump_all(documents, Dumper=DUMPER))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abk:- \n\t[]{}'\"!&*#|>%@`,?0")), max_size=60))
def test_loader_survives_broken_yaml(text: str) -> None:
    check(text)


VALID = [
    *yaml.safe_load_all((FIXTURES / "seed-demo.yaml").read_text()),
    *yaml.safe_load_all((FIXTURES / "native.yaml").read_text()),
    yaml.safe_load((FIXTURES / "mysecret.yaml").read_text()),
]


def leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every node of a parsed document (so any of them can be replaced)."""
    out = [path]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += leaves(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += leaves(value, (*path, i))
    return out


def replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[path[0]] = replaced(tree[path[0]], path[1:], value)
    return copy


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_loader_survives_mutated_valid_specs(data: st.DataObject) -> None:
    documents = list(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(documents) - 1))
        path = data.draw(st.sampled_from(leaves(documents[i])))
        documents[i] = replaced(documents[i], path, data.draw(TREES))
    check(yaml.dump_all(documents, Dumper=DUMPER))

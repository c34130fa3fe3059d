"""Hostile DataLoads and specs against the operator's surfaces: the CRD schema, ``tidepool
validate``, ``tidepool render``, and the command lines render writes (parsed by the real CLI).

Issue 15, item 1: a DataLoad target ``--concurrency=50000000`` became an option of ``tidepool
load`` (and the path list emptied: the whole dataset), ``--report-job=other/job`` wrote progress
onto another Job. Every layer now refuses or neutralises such a value on its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from tidepool.cli import build_parser, main
from tidepool.core.errors import ConfigError, SpecError
from tidepool.operator.cli import add_render_args, render_text
from tidepool.operator.crds import crds
from tidepool.operator.dataload import load_args, load_objects
from tidepool.operator.loadreport import check_own_job, parse_job_ref
from tidepool.operator.render import RenderOptions, option, render_dataset
from tidepool.spec.loader import load_text
from tidepool.spec.models import DataLoad, DataLoadSpec, DatasetRef, LoadTarget

from .conftest import POOL, SEED
from .schema_check import as_jsonschema

ENV = {
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": "id",
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": "secret",
}
HOSTILE_TARGETS = [
    "--concurrency=50000000",
    "--report-job=other/job",
    "-x",
    "--",
    "/ok\n--concurrency=5",
    "/tab\there",
]


def dataload_yaml(target: str, dataset: str = "images") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "DataLoad",
            "metadata": {"name": "warm"},
            "spec": {"dataset": {"name": dataset}, "target": [{"path": target}]},
        }
    )


def crd_schema(kind: str, mode: str) -> dict[str, Any]:
    (crd,) = [c for c in crds(mode) if c["spec"]["names"]["kind"] == kind]  # type: ignore[arg-type]
    return as_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
@pytest.mark.parametrize("mode", ["tidepool", "fluid"])
def test_crd_schema_refuses_option_like_targets(target: str, mode: str) -> None:
    doc = yaml.safe_load(dataload_yaml(target))
    schema = crd_schema("DataLoad", mode)
    if target.startswith("-"):
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            jsonschema.validate(doc, schema)
    jsonschema.validate(yaml.safe_load(dataload_yaml("/train")), schema)


@pytest.mark.parametrize("dataset", ["--concurrency=5", "Images", "a/b", "-x"])
def test_crd_schema_and_loader_refuse_bad_dataset_refs(dataset: str) -> None:
    doc = yaml.safe_load(dataload_yaml("/train", dataset=dataset))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema("DataLoad", "tidepool"))
    with pytest.raises(SpecError, match=r"spec\.dataset\.name"):
        load_text(dataload_yaml("/train", dataset=dataset), "load.yaml")


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_validate_and_render_refuse_hostile_targets(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "load.yaml"
    spec.write_text(SEED.read_text() + "\n---\n" + dataload_yaml(target))
    assert main(["validate", "-f", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "spec.target[0].path" in err or "spec.target.0.path" in err, err
    args = argparse.ArgumentParser()
    add_render_args(args)
    with pytest.raises(SpecError, match="target"):
        render_text(args.parse_args(["-f", str(spec)]))


def _unchecked_load(*paths: str, dataset: str = "images") -> DataLoad:
    """A DataLoad that skipped every validation (as if the schema and the model had a gap)."""
    spec = DataLoadSpec.model_construct(
        dataset=DatasetRef.model_construct(name=dataset, namespace="default"),
        target=[LoadTarget.model_construct(path=p, replicas=1) for p in paths],
        policy="Once",
        schedule=None,
    )
    return DataLoad.model_construct(
        api_version="data.fluid.io/v1alpha1",
        kind="DataLoad",
        metadata=load_text(dataload_yaml("/train")).dataloads[0].metadata,
        spec=spec,
    )


def test_rendered_load_command_keeps_every_target_a_path() -> None:
    """Even past the schema and the model, a target stays a positional path of ``tidepool
    load``: options come first and ``--`` ends them."""
    # a literal "--" target is left out: Python 3.11's argparse drops every "--" (the model and
    # the CRD refuse it long before, like any target that starts with "-")
    targets = [t for t in HOSTILE_TARGETS if t != "--"]
    load = _unchecked_load(*targets)
    argv = load_args(load, POOL, RenderOptions())
    parsed = build_parser().parse_args(argv)
    assert parsed.command == "load" and parsed.dataset == "images"
    assert parsed.paths == targets
    assert parsed.concurrency is None
    assert parsed.report_job == ""  # from the environment only (the Pod's own Job)
    (job,) = load_objects(load, [POOL], RenderOptions())
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TIDEPOOL_REPORT_JOB"]["value"] == "$(POD_NAMESPACE)/$(JOB_NAME)"


def test_rendered_commands_quote_spec_values() -> None:
    """Every value of a rendered worker, reporter and fuse command line is one ``--flag=value``
    argument or follows ``--``: a pool or dataset name cannot become an option."""
    bundle = load_text(SEED.read_text(), "seed.yaml", environ=ENV)
    (dataset,) = bundle.dataset_models.values()
    runtime = bundle.runtime_models.get(dataset.metadata.name)
    hostile_pool = "--members=static:evil=http://attacker"
    objects = render_dataset(dataset, runtime, RenderOptions(), pools=[hostile_pool])
    pods = [
        o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("StatefulSet", "DaemonSet")
    ]
    parser = build_parser()
    seen = 0
    for pod in pods:
        for container in pod["containers"]:
            args = container.get("args", [])
            if container.get("command"):  # the reporter: its own parser, same quoting
                assert all(a.startswith("--") and "=" in a for a in args), args
                assert option("--pool", hostile_pool) in args
                continue
            parsed = parser.parse_args(args)
            if parsed.command == "up":
                assert parsed.nodepool == hostile_pool
                assert parsed.members.startswith("kubernetes:")
                seen += 1
            elif parsed.command == "mount":
                assert parsed.dataset == dataset.metadata.name
                seen += 1
    assert seen == 2


def test_option_refuses_non_options() -> None:
    assert option("--pool", "-x") == "--pool=-x"
    for bad in ("pool", "-p", "--a=b"):
        with pytest.raises(ValueError):
            option(bad, "v")


@pytest.mark.parametrize(
    "text",
    ["other/", "/job", "UPPER/job", "ns/job name", "ns/" + "j" * 300, "n\u0455/job", "ns/jo\nb"],
)
def test_report_job_values_are_kubernetes_names(text: str) -> None:
    with pytest.raises(ConfigError, match="NAMESPACE/NAME"):
        parse_job_ref(text)


def test_a_load_job_reports_onto_itself_only() -> None:
    env = {"JOB_NAME": "warm-load-np1", "POD_NAMESPACE": "edge"}
    check_own_job("edge", "warm-load-np1", env)
    check_own_job("other", "anything", {})  # outside a Job's Pod: an operator's choice
    with pytest.raises(ConfigError, match="its own Job"):
        check_own_job("edge", "other-job", env)
    with pytest.raises(ConfigError, match="its own Job"):
        check_own_job("kube-system", "warm-load-np1", env)


@given(st.text(st.characters(exclude_categories=()), max_size=60))
@example("--concurrency=1")
@example("/ok\u2028x")
def test_target_model_is_total(path: str) -> None:
    try:
        target = LoadTarget.model_validate({"path": path})
    except ValidationError as exc:
        assert "path" in str(exc)
        return
    assert not target.path.startswith("-")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in target.path)


@given(st.text(st.characters(exclude_categories=()), max_size=80))
def test_parse_job_ref_is_total(text: str) -> None:
    try:
        ns, name = parse_job_ref(text)
    except ConfigError:
        return
    assert ns.isascii() and name.isascii() and not name.startswith("-")

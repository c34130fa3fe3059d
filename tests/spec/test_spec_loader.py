"""The loader: seed manifests load, every problem names file, document, field path and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tidepool.core.errors import SpecError
from tidepool.spec import (
    Dataset,
    default_runtime,
    load_files,
    load_text,
    secret_env_var,
)

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "seed-demo.yaml"
KEY_ID, KEY_SECRET = "LTAI-fake-key-id-7f3a", "fake-oss-secret-9b2c"

DATASET = """\
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata:
  name: ds
spec:
  mounts:
    - mountPoint: local:///data
      name: data
      path: /
"""


def runtime(levels: str, spec: str = "") -> str:
    """A Dataset plus an AlluxioRuntime named ``ds`` with the given levels (YAML list items)."""
    body = textwrap.indent(textwrap.dedent(levels).strip("\n"), " " * 6)
    extra = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        DATASET
        + "---\napiVersion: data.fluid.io/v1alpha1\nkind: AlluxioRuntime\n"
        + "metadata:\n  name: ds\nspec:\n"
        + (extra + "\n" if extra else "")
        + "  tieredstore:\n    levels:\n"
        + body
        + "\n"
    )


def problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "spec.yaml", environ={}, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- the seed demo


def assert_seed_config(bundle: object) -> None:
    from tidepool.spec import SpecBundle

    assert isinstance(bundle, SpecBundle)
    images = bundle.datasets["images"]
    assert images.nodepools == ("np763275de88194dabbb34b86ffaa2615e",)
    (mount,) = images.mounts
    assert (mount.protocol, mount.root, mount.path) == ("s3", "test-fluid/images/images", "")
    opts = mount.storage_options
    assert opts["endpoint_url"] == "https://oss-cn-beijing.aliyuncs.com"
    assert (opts["key"], opts["secret"]) == (KEY_ID, KEY_SECRET)
    assert opts["config_kwargs"]["s3"] == {"addressing_style": "virtual"}
    assert set(mount.secret_values) == {KEY_ID, KEY_SECRET}
    rt = images.runtime
    assert rt.replicas == 2 and rt.page_size == 1 << 20
    (tier,) = rt.tiers
    assert (tier.medium, tier.path, tier.quota) == ("SSD", "/mnt/images", 10 << 30)
    assert (tier.high, tier.low) == (0.99, 0.8)
    assert any("document 3 (Pod resnet) skipped: not a Tidepool kind" in n for n in bundle.notices)
    assert "images" in bundle.runtime_models and "images" in bundle.dataset_models


def test_seed_with_secret_document() -> None:
    bundle = load_files([SEED, FIXTURES / "mysecret.yaml"], environ={})
    assert_seed_config(bundle)
    assert [s.metadata.name for s in bundle.secrets] == ["mysecret"]


def test_seed_with_secrets_dir_in_kubernetes_layout(tmp_path: Path) -> None:
    (tmp_path / "mysecret").mkdir()
    (tmp_path / "mysecret" / "fs.oss.accessKeyId").write_text(KEY_ID)
    (tmp_path / "mysecret" / "fs.oss.accessKeySecret").write_text(KEY_SECRET + "\n")
    assert_seed_config(load_files([SEED], secrets_dir=tmp_path, environ={}))


def test_seed_with_flat_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "fs.oss.accessKeyId").write_text(KEY_ID)
    (tmp_path / "fs.oss.accessKeySecret").write_text(KEY_SECRET)
    assert_seed_config(load_files([SEED], secrets_dir=tmp_path, environ={}))


def test_seed_with_environment() -> None:
    environ = {
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": KEY_ID,
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": KEY_SECRET,
    }
    assert_seed_config(load_files([SEED], environ=environ))


def test_secret_sources_in_order(tmp_path: Path) -> None:
    (tmp_path / "fs.oss.accessKeyId").write_text("from-file-id")
    environ = {
        secret_env_var("mysecret", "fs.oss.accessKeyId"): "from-env-id",
        secret_env_var("mysecret", "fs.oss.accessKeySecret"): "from-env-secret",
    }
    opts = load_files([SEED], secrets_dir=tmp_path, environ=environ).datasets["images"]
    assert opts.mounts[0].storage_options["key"] == "from-file-id"
    assert opts.mounts[0].storage_options["secret"] == "from-env-secret"
    with_doc = load_files([SEED, FIXTURES / "mysecret.yaml"], secrets_dir=tmp_path, environ=environ)
    assert with_doc.datasets["images"].mounts[0].storage_options["key"] == KEY_ID


def test_seed_alone_fails_naming_the_secret_and_how_to_provide_it() -> None:
    with pytest.raises(SpecError) as info:
        load_files([SEED], environ={})
    first, second = info.value.problems
    assert "seed-demo.yaml:27: document 1 (Dataset images)" in first
    assert "spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef" in first
    assert "'mysecret'" in first and "'fs.oss.accessKeyId'" in first
    assert "Secret document" in first
    assert "mysecret/fs.oss.accessKeyId" in first
    assert "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID" in first
    assert "spec.mounts[0].encryptOptions[1].valueFrom.secretKeyRef" in second


def test_seed_models_parse_without_secrets() -> None:
    import yaml

    dataset = Dataset.model_validate(next(yaml.safe_load_all(SEED.read_text())))
    ref = dataset.spec.mounts[0].encrypt_options[0].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("mysecret", "fs.oss.accessKeyId")


# ----------------------------------------------------------------------------- Tidepool spellings


def test_tidepool_api_version_cache_runtime_and_extras() -> None:
    bundle = load_files([FIXTURES / "native.yaml"], environ={})
    bench = bundle.datasets["bench"]
    rt = bench.runtime
    assert (rt.replicas, rt.data_replicas, rt.page_size) == (3, 2, 4 << 20)
    assert (rt.metadata_ttl, rt.immutable) == (300.0, True)
    assert [(t.medium, t.path, t.quota) for t in rt.tiers] == [
        ("MEM", "/dev/shm/tidepool", 1 << 30),
        ("HDD", "/mnt/hdd1", 100 << 30),
        ("HDD", "/mnt/hdd2", 50 << 30),
    ]
    assert (rt.tiers[0].high, rt.tiers[0].low) == (0.9, 0.5)
    data, extra = bench.mounts
    assert (data.path, data.root) == ("data", "bench-bucket/data")
    assert data.storage_options["endpoint_url"] == "https://127.0.0.1:9000"
    assert data.storage_options["client_kwargs"] == {"region_name": "us-east-1"}
    assert data.storage_options["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert (extra.protocol, extra.root, extra.path) == ("file", "/srv/extra", "extra")
    (load,) = bundle.dataloads
    assert load.spec.policy == "Cron" and load.spec.target[0].replicas == 2


def test_quota_is_divided_among_comma_separated_paths() -> None:
    bundle = load_text(runtime("- {mediumtype: SSD, path: '/a, /b', quota: 10Gi}"), environ={})
    assert [(t.path, t.quota) for t in bundle.datasets["ds"].runtime.tiers] == [
        ("/a", 5 << 30),
        ("/b", 5 << 30),
    ]


def test_page_size_from_alluxio_property() -> None:
    text = runtime(
        "- {mediumtype: SSD, path: /a, quota: 1Gi}",
        "properties:\n  alluxio.worker.page.store.page.size: 2MB",
    )
    assert load_text(text, environ={}).datasets["ds"].runtime.page_size == 2 << 20


def test_dataset_without_runtime_gets_default(tmp_path: Path) -> None:
    bundle = load_text(DATASET, environ={}, default_cache_dir=tmp_path)
    (tier,) = bundle.datasets["ds"].runtime.tiers
    assert (tier.medium, tier.path, tier.quota) == ("SSD", str(tmp_path / "ds"), 10 << 30)
    assert (tier.high, tier.low) == (0.95, 0.7)
    assert any("no runtime named 'ds'" in n for n in bundle.notices)
    home = default_runtime("x").tiers[0].path
    assert home == str(Path("~/.cache/tidepool/x").expanduser())


def test_runtime_without_dataset_is_a_notice() -> None:
    text = runtime("- {mediumtype: SSD, path: /a, quota: 1Gi}").replace(
        "name: ds\nspec:\n  t", "name: other\nspec:\n  t"
    )
    bundle = load_text(text, environ={})
    assert any("(AlluxioRuntime other): serves no dataset" in n for n in bundle.notices)


def test_empty_documents_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("---\n---\n" + DATASET + "---\n")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert list(load_files([tmp_path], environ={}).datasets) == ["ds"]


# ----------------------------------------------------------------------------- problems


def test_bad_quota() -> None:
    problem = one_problem(runtime("- {mediumtype: SSD, path: /a, quota: 10Gx}"))
    assert problem.startswith("spec.yaml:")
    assert "document 2 (AlluxioRuntime ds): spec.tieredstore.levels[0].quota: " in problem
    assert "'10Gx'" in problem and "10Gi" in problem


def test_bad_mediumtype_lists_valid_values() -> None:
    problem = one_problem(runtime("- {mediumtype: NVME, path: /a, quota: 1Gi}"))
    assert "spec.tieredstore.levels[0].mediumtype" in problem
    assert "'MEM', 'SSD' or 'HDD'" in problem and "'NVME'" in problem


def test_low_above_high() -> None:
    problem = one_problem(
        runtime("- {mediumtype: SSD, path: /a, quota: 1Gi, high: '0.5', low: 0.8}")
    )
    assert "spec.tieredstore.levels[0].low: low watermark 0.8 must be below high" in problem


def test_quota_smaller_than_one_page() -> None:
    problem = one_problem(runtime("- {mediumtype: MEM, path: /a, quota: 512Ki}"))
    assert "spec.tieredstore.levels[0].quota" in problem
    assert "smaller than one page" in problem and "524288" in problem


def test_duplicate_medium_and_path() -> None:
    found = problems(
        runtime("""
        - {mediumtype: SSD, path: /a, quota: 1Gi}
        - {mediumtype: SSD, path: /a, quota: 1Gi}
    """)
    )
    assert any("levels[1].mediumtype: medium SSD is already used by levels[0]" in p for p in found)
    assert any("levels[1].path: directory '/a' is already used" in p for p in found)


def test_page_size_out_of_range() -> None:
    text = runtime("- {mediumtype: SSD, path: /a, quota: 1Gi}", "pageSize: 1Ki")
    assert "spec.pageSize: page size 1024 bytes is outside" in one_problem(text)


def test_quota_list_length_mismatch() -> None:
    problem = one_problem(runtime("- {mediumtype: SSD, path: '/a,/b', quotaList: 1Gi}"))
    assert "levels[0].quotaList: 1 quotas for 2" in problem


def test_unknown_field_names_path_and_valid_fields() -> None:
    problem = one_problem(runtime("- {mediumtype: SSD, path: /a, quota: 1Gi, qouta: 2Gi}"))
    assert "spec.tieredstore.levels[0].qouta: unknown field 'qouta'" in problem
    assert "valid fields here: mediumtype, path, quota, quotaList, high, low" in problem


def test_unknown_field_line_number() -> None:
    text = DATASET + "  mountz: []\n"
    problem = one_problem(text)
    assert problem.startswith("spec.yaml:10: document 1 (Dataset ds): spec.mountz: unknown field")


def test_yaml_syntax_error_names_line() -> None:
    problem = one_problem(DATASET + "---\nkind: Dataset\nmetadata: name: x\n")
    assert problem.startswith("spec.yaml:12:15: invalid YAML: mapping values are not allowed")


def test_all_problems_at_once() -> None:
    text = runtime("- {mediumtype: XX, path: relative, quota: 1Gi}").replace(
        "name: ds\nspec:\n  m", "name: Bad_Name\nspec:\n  m"
    )
    found = problems(text)
    assert any("metadata.name: 'Bad_Name' is not a valid name" in p for p in found)
    assert any("mediumtype" in p for p in found)


def test_wrong_api_version_and_missing_kind() -> None:
    found = problems(
        DATASET.replace("data.fluid.io/v1alpha1", "data.fluid.io/v1") + "---\nfoo: 1\n"
    )
    assert any(
        "apiVersion: 'data.fluid.io/v1' is not supported; use one of data.fluid.io" in p
        for p in found
    )
    assert any("document 2 (? <no name>): kind: missing" in p for p in found)


def test_dns_label_names() -> None:
    problem = one_problem(DATASET.replace("name: ds", "name: " + "a" * 64))
    assert "metadata.name" in problem and "at most 63" in problem


def test_unsupported_scheme_lists_supported() -> None:
    problem = one_problem(DATASET.replace("local:///data", "hdfs://nn/data"))
    assert "spec.mounts[0].mountPoint: unsupported scheme 'hdfs'" in problem
    assert "s3://, oss://, http://, https://, local://, file://" in problem


def test_unknown_dotted_option_lists_known_keys() -> None:
    text = (
        DATASET.replace("local:///data", "s3://b/p")
        + "      options:\n        fs.s3a.endpiont: x\n"
    )
    problem = one_problem(text)
    assert "spec.mounts[0].options['fs.s3a.endpiont']: unknown option" in problem
    assert "fs.s3a.endpoint" in problem


def test_nested_and_duplicate_mounts() -> None:
    text = DATASET.replace("      path: /\n", "") + (
        "    - {mountPoint: /other, name: data}\n"
        "    - {mountPoint: /x, name: sub, path: /data/sub}\n"
    )
    found = problems(text)
    assert any(
        "spec.mounts[1].name: mount name 'data' is also used by mounts[0]" in p for p in found
    )
    assert any("spec.mounts[2].path: mount path '/data/sub' overlaps" in p for p in found)


def test_missing_file() -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read spec file"):
        load_files(["/nonexistent/nope.yaml"], environ={})


def test_dataload_cron_needs_schedule_and_valid_paths() -> None:
    text = """\
apiVersion: data.fluid.io/v1alpha1
kind: DataLoad
metadata: {name: warm}
spec:
  dataset: {name: ds}
  policy: Cron
  target:
    - path: /../etc
"""
    found = problems(text)
    assert any("spec.schedule: required when policy is Cron" in p for p in found)
    assert any("spec.target[0].path" in p and ".." in p for p in found)


def test_bad_policy_lists_valid_values() -> None:
    text = "apiVersion: data.fluid.io/v1alpha1\nkind: DataLoad\nmetadata: {name: w}\n"
    text += "spec: {dataset: {name: ds}, policy: Weekly}\n"
    problem = one_problem(text)
    assert "spec.policy: Input should be 'Once' or 'Cron', got 'Weekly'" in problem


def test_runtime_binds_only_within_its_namespace(tmp_path: Path) -> None:
    text = runtime("- {mediumtype: MEM, path: /dev/shm/x, quota: 1Gi}").replace(
        "name: ds\nspec:\n  t", "name: ds\n  namespace: other\nspec:\n  t"
    )
    bundle = load_text(text, environ={}, default_cache_dir=tmp_path)
    assert bundle.datasets["ds"].runtime.tiers[0].path == str(tmp_path / "ds")
    assert any("serves no dataset" in n and "'other'" in n for n in bundle.notices)


# ----------------------------------------------------------------------------- shared tiers


def two_datasets(shared_a: bool, shared_b: bool, path: str = "/mnt/cache") -> str:
    docs = []
    for name, shared in (("a", shared_a), ("b", shared_b)):
        flag = ", shared: true" if shared else ""
        docs.append(
            DATASET.replace("name: ds", f"name: {name}")
            + "---\napiVersion: data.fluid.io/v1alpha1\nkind: AlluxioRuntime\n"
            + f"metadata:\n  name: {name}\nspec:\n  tieredstore:\n    levels:\n"
            + f"      - {{mediumtype: SSD, path: {path}, quota: 1Gi{flag}}}\n"
        )
    return "---\n".join(docs)


def test_a_tier_directory_serves_one_dataset_unless_all_share_it() -> None:
    found = problems(two_datasets(False, False))
    assert len(found) == 2, found
    assert all("spec.tieredstore.levels[0].path" in p for p in found)
    assert all("'/mnt/cache' is also a tier of dataset(s)" in p for p in found)
    assert any("(AlluxioRuntime a)" in p and "'b'" in p for p in found)
    (only,) = problems(two_datasets(True, False))  # b did not agree to share
    assert "(AlluxioRuntime b)" in only and "shared: true" in only
    bundle = load_text(two_datasets(True, True), "spec.yaml", environ={})
    assert all(bundle.datasets[n].runtime.tiers[0].shared for n in ("a", "b"))

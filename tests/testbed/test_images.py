"""The sample JPEG dataset: deterministic, real JPEGs of about the requested size."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from tidepool_lab.testbed.images import CLASS_COUNT, make_jpeg, make_jpegs, write_tree

NAME = re.compile(r"^train/class_(\d\d)/img_(\d{5})\.jpg$")


def test_deterministic_for_a_seed() -> None:
    first = list(make_jpegs(12, seed=7))
    assert list(make_jpegs(12, seed=7)) == first
    other = list(make_jpegs(12, seed=8))
    assert [n for n, _ in other] == [n for n, _ in first]
    assert all(a != b for (_, a), (_, b) in zip(first, other, strict=True))
    assert len({data for _, data in first}) == 12


def test_names_spread_over_classes() -> None:
    names = [name for name, _ in make_jpegs(25)]
    assert len(set(names)) == 25
    classes = set()
    for index, name in enumerate(names):
        match = NAME.match(name)
        assert match, name
        assert int(match.group(2)) == index
        classes.add(match.group(1))
    assert len(classes) == CLASS_COUNT


@pytest.mark.parametrize("target_kib", [100, 20, 400])
def test_real_jpegs_of_the_target_size(target_kib: int) -> None:
    for _, data in make_jpegs(8, seed=3, target_kib=target_kib):
        assert 0.75 * target_kib * 1024 <= len(data) <= 1.25 * target_kib * 1024
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            image.load()
            assert min(image.size) >= 64


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target_kib"):
        make_jpeg(0, target_kib=0)
    with pytest.raises(ValueError, match="count"):
        list(make_jpegs(-1))


def test_write_tree(tmp_path: Path) -> None:
    items = list(make_jpegs(3, target_kib=10))
    total = write_tree(tmp_path / "out", items)
    assert total == sum(len(d) for _, d in items)
    for name, data in items:
        assert (tmp_path / "out" / name).read_bytes() == data
    with pytest.raises(ValueError, match="escapes"):
        write_tree(tmp_path / "out", [("../evil.jpg", b"x")])
    assert not (tmp_path / "evil.jpg").exists()

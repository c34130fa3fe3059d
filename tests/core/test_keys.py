"""The S3 key <-> dataset path mapping (tidepool.core.keys): reversible, injective, POSIX-safe."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidepool.core import keys
from tidepool.core.paths import normalize

segment = st.one_of(
    st.sampled_from(
        ["", ".", "..", "~%", "~%x", "a", "b c", "%41", "+", "#?", "\\", "é", "e\u0301"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
key_text = st.lists(segment, min_size=1, max_size=5).map("/".join).filter(bool)


@given(key_text, st.integers(min_value=0, max_value=3))
def test_every_key_has_one_path_that_leads_back(key: str, size: int) -> None:
    placed = keys.place(key, size)
    if placed.kind == "marker":
        assert keys.marker_key(placed.path) == key
        assert size == 0
    else:
        assert keys.to_key(placed.path) == key
    if "\x00" not in placed.path:  # NUL keys are refused before they reach a path
        assert normalize(placed.path) == placed.path  # a POSIX path, inside the dataset


@given(st.lists(key_text, unique=True, max_size=12))
def test_distinct_keys_get_distinct_paths(names: list[str]) -> None:
    paths = [keys.place(k, 1).path for k in names]
    assert len(set(paths)) == len(paths)
    both = [keys.escaped(p) for p in paths if not keys.is_escaped(p.rpartition("/")[2])]
    assert not set(both) & set(paths)
    assert all(keys.to_key(keys.escaped(p)) == p for p in paths if p not in both)


def test_the_documented_examples() -> None:
    assert keys.place("a/b c/d.txt", 5) == keys.Placed("a/b c/d.txt", "file")
    assert keys.place("emptydir/", 0) == keys.Placed("emptydir", "marker")
    assert keys.place("x/y//z", 3).path == "x/y/~%%2Fz"
    assert keys.place("x/trail/", 19).path == "x/trail/~%"
    assert keys.place("a/./b", 1).path == "a/~%.%2Fb"
    assert keys.place("a/../b", 1).path == "a/~%..%2Fb"
    assert keys.place("/lead", 1).path == "~%%2Flead"
    assert keys.escaped("x/both") == "x/~%both"
    assert keys.to_key("x/~%both") == "x/both"
    assert keys.place("sym/percent%20literal.txt", 1).path == "sym/percent%20literal.txt"

"""Key safety: the fast path of check_key accepts exactly what the full rules accept."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from tierctl.errors import UnsafeKey
from tierctl.movers.base import check_key


def _safe_by_the_rules(key: str) -> bool:
    if not key or key.startswith("/") or key.endswith("/"):
        return False
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return False
    return unicodedata.is_normalized("NFC", key)


keys = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(["a", ".", "..", "", "b.c", "é", "e\u0301", "\x00", "\n", " ", "..x"]), max_size=6
    ).map("/".join),
)


@settings(max_examples=3000, deadline=None)
@given(keys)
def test_check_key_matches_the_rules(key: str) -> None:
    try:
        check_key(key)
        accepted = True
    except UnsafeKey:
        accepted = False
    assert accepted == _safe_by_the_rules(key), repr(key)

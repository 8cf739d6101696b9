"""A cache entry's key carries the version of the rules it was made under (fercore.cache.entries.RULES): when the
code that decides an entry's content changes, its version must move, or entries made under the old rules would be
found and used as if made under the new ones."""
import json

import pytest

from tests import cache_rules


def test_every_kinds_code_matches_what_its_version_was_recorded_with():
    moved = cache_rules.changed()
    assert not moved, (
        "the code these cache entries depend on changed since their version was recorded: "
        + "; ".join(f"{v}: {', '.join(u)}" for v, u in moved.items())
        + ". Bump the kind's version in fercore/cache/entries.py RULES if what its entries hold could change, then "
          "record it: python -m tests.cache_rules --write")


def test_a_change_to_the_code_is_caught(tmp_path, monkeypatch):
    """The fingerprint sees a change of code (here a constant of train.py) and not a change of comment."""
    source = (cache_rules.ROOT / "fercore/train.py").read_text()
    fake_root = tmp_path
    (fake_root / "fercore").mkdir()
    monkeypatch.setattr(cache_rules, "ROOT", fake_root)
    (fake_root / "fercore/train.py").write_text(source)
    before = cache_rules.unit_source("fercore/train.py")
    (fake_root / "fercore/train.py").write_text(source.replace("eps = 1e-12", "eps = 1e-11  # a comment"))
    assert cache_rules.unit_source("fercore/train.py") != before
    (fake_root / "fercore/train.py").write_text(source + "\n# only a comment\n")
    assert cache_rules.unit_source("fercore/train.py") == before
    with pytest.raises(LookupError, match="no top-level function or class nope"):
        cache_rules.unit_source("fercore/train.py:nope")


def test_the_record_names_only_current_versions():
    from fercore.cache.entries import RULES

    recorded = json.loads(cache_rules.RECORD.read_text())
    assert set(recorded) == {version for version, _ in RULES.values()}

"""The one site-naming rule: ``base`` once, ``base#k`` when a base repeats (k in execution order)."""

from __future__ import annotations

from actaudit.edit.slopes import assign_names
from actaudit.naming import base_of, site_name, site_names


def test_a_base_seen_once_keeps_its_name() -> None:
    assert site_names(["conv1.relu", "fc.relu"]) == ["conv1.relu", "fc.relu"]


def test_repeated_bases_count_from_zero_in_order_and_others_stay_plain() -> None:
    got = site_names(["relu", "head", "relu", "relu", "head", "tail"])
    assert got == ["relu#0", "head#0", "relu#1", "relu#2", "head#1", "tail"]


def test_site_name_and_base_of_are_inverse() -> None:
    assert site_name("layer1.0.relu", 1, 2) == "layer1.0.relu#1"
    assert site_name("layer1.0.relu", 0, 1) == "layer1.0.relu"
    assert base_of("layer1.0.relu#1") == "layer1.0.relu"
    assert base_of("layer1.0.relu") == "layer1.0.relu"
    assert base_of("a#b#12") == "a#b"


def test_empty() -> None:
    assert site_names([]) == []


def test_rewrite_planner_uses_the_same_rule() -> None:
    assert assign_names([("r", 1), ("s", 2), ("r", 3)]) == [("r#0", 1), ("s", 2), ("r#1", 3)]

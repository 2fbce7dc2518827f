from __future__ import annotations

import pytest

from actaudit.errors import ActauditError
from actaudit.gates import evaluate, parse_gate
from actaudit.stats import SiteInfo, SiteStats
from actaudit.verdicts import Settings, classify


def _site(name: str, low: list[int]) -> object:
    s = SiteStats(len(low), 10, 10)
    s.low[:] = low
    return classify(SiteInfo(name, "relu", "relu", units=len(low)), s, Settings())


SITES = [_site("enc.0.relu", [10, 10, 0, 0]), _site("enc.1.relu", [0, 0, 0, 0]), _site("head/relu", [10, 0])]
SUMMARY = {"dead": 3, "dead_fraction": 0.3, "saturated": 0, "saturated_fraction": 0.0}


def test_parse() -> None:
    g = parse_gate("enc.*:dead-fraction>=0.5")
    assert (g.glob, g.metric, g.op, g.value) == ("enc.*", "dead-fraction", ">=", 0.5)
    for bad in ["dead", "dead>>1", "deadness>1", "dead>x"]:
        with pytest.raises(ActauditError):
            parse_gate(bad)


def test_model_gate() -> None:
    [r] = evaluate([parse_gate("dead>2")], SITES, SUMMARY)  # type: ignore[arg-type]
    assert r.failed and r.value == 3
    [r] = evaluate([parse_gate("dead-fraction>0.3")], SITES, SUMMARY)  # type: ignore[arg-type]
    assert not r.failed


def test_site_gate_names_failing_sites() -> None:
    [r] = evaluate([parse_gate("enc.*:dead-fraction>=0.5")], SITES, SUMMARY)  # type: ignore[arg-type]
    assert r.failed and r.failing_sites == ["enc.0.relu"] and r.value == 0.5


def test_glob_matching_nothing_is_an_error() -> None:
    with pytest.raises(ActauditError, match="matches no site"):
        evaluate([parse_gate("dec.*:dead>0")], SITES, SUMMARY)  # type: ignore[arg-type]

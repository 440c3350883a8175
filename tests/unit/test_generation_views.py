"""controller/read/generation_views.py: a group's generations from its members' views (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
from rpctl.controller.read.generation_views import generation_views


@dataclass
class M:
    name: str
    generation: int
    draining: bool = False
    gone: bool = False
    canary: bool = False
    verdict: Optional[str] = None
    target_share: float = 0.0
    left: bool = False  # queued connections or live flows

    @property
    def state(self) -> str:
        if self.gone:
            return "gone"
        if self.draining:
            return "draining" if self.left else "drained"
        return "active"


def test_each_generation_has_its_state_share_and_members():
    gens = generation_views([
        M("a-1", 1, draining=True, left=True), M("a-2", 1, draining=True),
        M("b-1", 2, target_share=0.5), M("b-2", 2, target_share=0.5),
        M("x", 0),
    ])
    assert [(g.number, str(g.state), g.share, g.members) for g in gens] == [
        (1, "draining", 0.0, ("a-1", "a-2")), (2, "serving", 1.0, ("b-1", "b-2"))]


def test_a_drained_generation_and_a_canary():
    gens = generation_views([M("a-1", 1, target_share=0.95), M("b-1", 2, canary=True, target_share=0.05),
                             M("c-1", 3, draining=True, verdict="rolled back"), M("c-2", 3, gone=True)])
    assert [str(g.state) for g in gens] == ["serving", "canary", "drained"]
    assert gens[1].share == pytest.approx(0.05) and gens[2].verdict == "rolled back"
    assert gens[2].as_json == {"generation": 3, "state": "drained", "share": 0.0, "members": ["c-1", "c-2"],
                               "verdict": "rolled back"}

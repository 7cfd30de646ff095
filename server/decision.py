"""The overflow decision: cancel the overflow event, or it is needed, or not yet clear.

Evaluated from doors-open to the overflow deadline against ``target = capacity x threshold``:

* ``cancel_overflow`` when the forecast's upper bound is below ``target - margin x capacity``;
* ``overflow_needed`` when the forecast's lower bound is above ``target + margin x capacity``;
* otherwise the state does not change.

Hysteresis: a new state must be proposed continuously for ``hold_s`` (event time) before it is taken,
and a decision once taken never falls back to ``undecided`` (only the opposite decision, held as long,
replaces it). At the deadline the state freezes; an operator override also freezes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from server.forecast import Forecast


class DecisionState(StrEnum):
    undecided = "undecided"
    cancel_overflow = "cancel_overflow"
    overflow_needed = "overflow_needed"


@dataclass(frozen=True)
class DecisionMemory:
    state: DecisionState
    since: datetime
    frozen: bool = False
    override_by: str | None = None
    candidate: DecisionState | None = None
    candidate_since: datetime | None = None


@dataclass(frozen=True)
class DecisionRules:
    capacity: int
    threshold: float
    doors_open: datetime
    deadline: datetime | None
    margin: float
    hold_s: float
    min_share: float

    @property
    def target(self) -> float:
        return self.capacity * self.threshold


def propose(forecast: Forecast | None, rules: DecisionRules) -> DecisionState | None:
    """The state the forecast argues for, or None when it argues for nothing (yet)."""
    if forecast is None or forecast.share < rules.min_share:
        return None
    if forecast.method == "registrations":  # no live count behind it: never decide on registrations alone
        return None
    band = rules.margin * rules.capacity
    if forecast.high < rules.target - band:
        return DecisionState.cancel_overflow
    if forecast.low > rules.target + band:
        return DecisionState.overflow_needed
    return None


def step(memory: DecisionMemory, forecast: Forecast | None, rules: DecisionRules, now: datetime) -> DecisionMemory:
    """Advance the decision by one evaluation at ``now``."""
    if memory.frozen:
        return memory
    if rules.deadline is not None and now >= rules.deadline:
        return replace(memory, frozen=True, candidate=None, candidate_since=None)
    if now < rules.doors_open:
        return memory
    proposal = propose(forecast, rules)
    if proposal is None or proposal == memory.state:
        return replace(memory, candidate=None, candidate_since=None) if memory.candidate else memory
    if memory.candidate != proposal or memory.candidate_since is None:
        memory = replace(memory, candidate=proposal, candidate_since=now)
    assert memory.candidate_since is not None
    if (now - memory.candidate_since).total_seconds() >= rules.hold_s:
        return DecisionMemory(state=proposal, since=now)
    return memory


def override(memory: DecisionMemory, state: DecisionState, user: str, now: datetime) -> DecisionMemory:
    """An operator sets the state; it stays frozen there."""
    return DecisionMemory(state=state, since=now, frozen=True, override_by=user)

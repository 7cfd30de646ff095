"""The overflow decision, by risk: cancel the overflow event, it is needed, or not (yet) clear.

Evaluated from doors-open to the overflow deadline with ``p = P(final >= target)`` from the forecast
(``target = capacity x threshold``). The two mistakes do not cost the same:

* ``cancel_overflow`` only when ``p <= cancel_max_risk`` (default 2 %), arrivals are neither accelerating
  nor paused (a security line stalls, a second wave comes), honest-looking registrations do not expect the
  target, and
  at least ``cancel_not_before`` of the doors-to-start window has passed: a wrong cancel turns people away;
* ``overflow_needed`` when ``p >= needed_min_probability`` (default 80 %): keeping a stage costs money;
* otherwise the state does not change.

Hysteresis: a new state must be proposed continuously for ``hold_s`` (event time; ``needed_hold_s`` for
``overflow_needed``, shorter as it is cheap to undo) before it is taken, except at the last evaluation
before the deadline (``final_call_s``): the state freezes next, so there is no flapping left to guard
against, and a proposal then is taken rather than left to the organizer as ``undecided``.
A decision never falls back to ``undecided``; before the deadline it is *reversed* when the evidence holds
the opposite threshold as long (``reversed_from`` says so). At the deadline the state freezes; an
``undecided`` state at the deadline means the organizer must decide. An operator override also freezes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from server.forecast import FinalForecast


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
    reversed_from: DecisionState | None = None
    """The opposite decision this one replaced (before the deadline), if any."""


@dataclass(frozen=True)
class DecisionRules:
    capacity: int
    threshold: float
    doors_open: datetime
    deadline: datetime | None
    hold_s: float = 300.0
    """How long a cancel (or a reversal to cancel) must be argued for before it is taken."""
    needed_hold_s: float = 120.0
    """The same for ``overflow_needed``: shorter, because keeping a stage ready is cheap to undo."""
    start: datetime | None = None
    final_call_s: float = 0.0
    """Within this long before the deadline (the evaluation interval: the last evaluation before it) a
    proposal is taken without waiting out the hold."""
    cancel_max_risk: float = 0.02
    needed_min_probability: float = 0.8
    min_fitted_points: int = 3
    min_share_in: float = 0.2
    cancel_not_before: float = 0.5
    """No cancel before this share of the doors-to-start window has passed: however the early counts look,
    a late surge cannot be ruled out that early, and a cancel is final."""
    """No decision while the forecast thinks less than this share of the final crowd is in (or queueing):
    before that, the answer would come from the prior over arrival shapes, not from this crowd."""

    @property
    def target(self) -> float:
        return self.capacity * self.threshold


def _progress(rules: DecisionRules, now: datetime) -> float:
    """Share of the doors-to-start window passed (the start is the deadline's reference when known)."""
    end = rules.start or rules.deadline
    if end is None or end <= rules.doors_open:
        return 1.0
    return (now - rules.doors_open) / (end - rules.doors_open)


def propose(
    forecast: FinalForecast | None, rules: DecisionRules, now: datetime | None = None
) -> DecisionState | None:
    """The state the forecast argues for, or None when it argues for nothing (yet)."""
    if forecast is None or forecast.p_reach_target is None:
        return None
    if forecast.method == "registrations" or forecast.fitted_points < rules.min_fitted_points:
        return None  # never decide without enough live counts behind the forecast
    if forecast.method != "counted" and forecast.expected_share_in < rules.min_share_in:
        return None
    if forecast.p_reach_target <= rules.cancel_max_risk:
        if forecast.accelerating or forecast.paused:  # a late crowd, or a pause, is not a small crowd
            return None
        if forecast.registrations_expect_target:  # honest registrations against early arrivals: a human decides
            return None
        if now is not None and _progress(rules, now) < rules.cancel_not_before:
            return None
        return DecisionState.cancel_overflow
    if forecast.p_reach_target >= rules.needed_min_probability:
        return DecisionState.overflow_needed
    return None


def step(
    memory: DecisionMemory, forecast: FinalForecast | None, rules: DecisionRules, now: datetime
) -> DecisionMemory:
    """Advance the decision by one evaluation at ``now`` (``forecast`` None: no evidence may move it)."""
    if memory.frozen:
        return memory
    if rules.deadline is not None and now >= rules.deadline:
        return replace(memory, frozen=True, candidate=None, candidate_since=None)
    if now < rules.doors_open:
        return memory
    proposal = propose(forecast, rules, now)
    if proposal is None or proposal == memory.state:
        return replace(memory, candidate=None, candidate_since=None) if memory.candidate else memory
    if memory.candidate != proposal or memory.candidate_since is None:
        memory = replace(memory, candidate=proposal, candidate_since=now)
    assert memory.candidate_since is not None
    hold = rules.needed_hold_s if proposal == DecisionState.overflow_needed else rules.hold_s
    if rules.deadline is not None and (rules.deadline - now).total_seconds() <= rules.final_call_s:
        hold = 0.0  # the last evaluation before the deadline: nothing left to flap
    if (now - memory.candidate_since).total_seconds() >= hold:
        reversed_from = memory.state if memory.state != DecisionState.undecided else None
        return DecisionMemory(state=proposal, since=now, reversed_from=reversed_from)
    return memory


def override(memory: DecisionMemory, state: DecisionState, user: str, now: datetime) -> DecisionMemory:
    """An operator sets the state; it stays frozen there."""
    return DecisionMemory(state=state, since=now, frozen=True, override_by=user)

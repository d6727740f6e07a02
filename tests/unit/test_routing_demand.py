"""When a router announces its demand for a model (lexora_router.demand): at once when a request is
first held, every ~2 s while any waits, at most every ~10 s while requests only run, never idle."""

from __future__ import annotations

from lexora_router.demand import RUNNING_EVERY_S, WAITING_EVERY_S, DemandSchedule


def test_a_held_request_is_announced_at_once_then_every_few_seconds() -> None:
    schedule = DemandSchedule("router-1")
    [first] = schedule.due({"m": (1, 0)}, now=100.0)
    assert (first.model_id, first.waiting, first.running, first.at, first.observer) == ("m", 1, 0, 100.0, "router-1")
    assert schedule.due({"m": (3, 0)}, now=100.0 + WAITING_EVERY_S / 2) == []
    [again] = schedule.due({"m": (3, 0)}, now=100.0 + WAITING_EVERY_S)
    assert again.waiting == 3


def test_running_requests_are_announced_at_most_every_ten_seconds() -> None:
    schedule = DemandSchedule("router-1")
    [first] = schedule.due({"m": (0, 2)}, now=0.0)
    assert (first.waiting, first.running) == (0, 2)
    assert schedule.due({"m": (0, 2)}, now=RUNNING_EVERY_S - 1) == []
    assert [d.running for d in schedule.due({"m": (0, 1)}, now=RUNNING_EVERY_S)] == [1]


def test_a_model_that_starts_waiting_is_announced_at_once_even_just_after_running() -> None:
    schedule = DemandSchedule("router-1")
    schedule.due({"m": (0, 1)}, now=0.0)
    [woken] = schedule.due({"m": (1, 1)}, now=0.5)
    assert woken.waiting == 1


def test_an_idle_model_is_not_announced_and_each_model_has_its_own_clock() -> None:
    schedule = DemandSchedule("router-1")
    assert schedule.due({"idle": (0, 0)}, now=0.0) == []
    assert [d.model_id for d in schedule.due({"a": (0, 1), "b": (2, 0)}, now=0.0)] == ["a", "b"]
    assert [d.model_id for d in schedule.due({"a": (0, 1), "b": (2, 0)}, now=WAITING_EVERY_S)] == ["b"]

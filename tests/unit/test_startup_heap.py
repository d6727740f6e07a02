"""What a process allocated while starting is out of the garbage collector's reach once it runs."""

from __future__ import annotations

import gc

from lexora_runtime.loop import freeze_startup_heap


def test_objects_from_start_up_are_no_longer_walked_by_collections() -> None:
    allocated_at_start = [{"model": "a"}, {"model": "b"}]
    assert any(o is allocated_at_start for o in gc.get_objects())
    freeze_startup_heap()
    try:
        assert gc.get_freeze_count() > 0
        assert not any(o is allocated_at_start for o in gc.get_objects()), "a collection would still walk it"
        allocated_later = [{"request": 1}]
        assert any(o is allocated_later for o in gc.get_objects()), "later objects are collected as usual"
    finally:
        gc.unfreeze()

"""When this router announces its demand for a model (`ModelDemand` on router.v1.model.demanded),
which the operator reads to wake a deployment at zero replicas and to time its idle scale-down.
Pure: counts and the clock are arguments.

- a model with held requests (`waiting` > 0): at once when the first one is held, then every
  WAITING_EVERY_S while any still waits;
- a model with requests running on its replicas only: at most every RUNNING_EVERY_S;
- an idle model: never (the operator's idle clock runs from the last announcement).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lexora_contracts.messages import ModelDemand

WAITING_EVERY_S = 2.0
RUNNING_EVERY_S = 10.0


@dataclass
class _Sent:
    at: float
    waiting: bool


class DemandSchedule:
    def __init__(self, observer: str):
        self._observer = observer
        self._sent: dict[str, _Sent] = {}

    def due(self, counts: Mapping[str, tuple[int, int]], now: float) -> list[ModelDemand]:
        """The announcements to send now, given (waiting, running) per model id; each is taken as
        sent."""
        due: list[ModelDemand] = []
        for model_id, (waiting, running) in sorted(counts.items()):
            if waiting <= 0 and running <= 0:
                continue
            sent = self._sent.get(model_id)
            every = WAITING_EVERY_S if waiting else RUNNING_EVERY_S
            newly_waiting = waiting > 0 and (sent is None or not sent.waiting)
            if sent is None or newly_waiting or now - sent.at >= every:
                self._sent[model_id] = _Sent(now, waiting > 0)
                due.append(
                    ModelDemand(
                        model_id=model_id, waiting=waiting, running=max(running, 0), at=now, observer=self._observer
                    )
                )
        for model_id in [m for m, sent in self._sent.items() if now - sent.at >= RUNNING_EVERY_S]:
            if max(counts.get(model_id, (0, 0))) <= 0:
                del self._sent[model_id]  # idle: forgotten, its next demand goes out at once
        return due

"""Several ModelDeployments serving one model id (a weighted rollout): which of them make up the
model, and the share of its traffic each takes. Pure.

The oldest ModelDeployment (by creationTimestamp, then namespace/name) sets the catalog: kind,
Triton model, pricing, context length, aliases. A younger one that disagrees on kind or Triton
model name would answer requests the catalog does not describe: it is left out of the model (no
endpoints, no deployment entry) and told why in its status. Pricing or context length differing is
fine: the oldest's are published, and a canary is billed as the model it stands in for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lexora_contracts.registry import ModelRecord
from lexora_operator.registry import Member, model_record


@dataclass(frozen=True)
class MemberView:
    """What one ModelDeployment's status says about its part of the model."""

    weight: int
    share: int  # percent of the model id's traffic it takes now
    deployments: int  # ModelDeployments in the model, this one included
    conflict: str | None = None  # why it is left out of the model (None: it is in)


@dataclass(frozen=True)
class Rollout:
    record: ModelRecord | None  # None: no ModelDeployment serves the id any more (withdraw it)
    members: dict[str, MemberView]  # by Member.key


def catalog_conflict(oldest: Member, member: Member) -> str | None:
    """Why `member` cannot serve the model `oldest` describes, or None."""
    theirs, mine = oldest.spec, member.spec
    problems = []
    if mine.model.kind != theirs.model.kind:
        problems.append(f"model.kind {mine.model.kind} (it has {theirs.model.kind})")
    if mine.triton_model_name != theirs.triton_model_name:
        problems.append(f"Triton model {mine.triton_model_name} (it has {theirs.triton_model_name})")
    if not problems:
        return None
    return (
        f"{oldest.key}, the oldest ModelDeployment of {theirs.model.id}, sets its catalog; this one differs in "
        f"{' and '.join(problems)}, so it takes no traffic: match it, or give this one another model.id"
    )


def shares(members: Sequence[Member]) -> dict[str, int]:
    """Percent of the traffic each member takes: its weight over the weights of the members with a
    ready replica (0 without one). When those weights are all 0, the ready members split it evenly."""
    ready = [m for m in members if m.endpoints]
    total = sum(m.spec.traffic.weight for m in ready)
    result = {m.key: 0 for m in members}
    for member in ready:
        if total:
            result[member.key] = round(100 * member.spec.traffic.weight / total)
        else:
            result[member.key] = round(100 / len(ready))
    return result


def plan_rollout(members: Sequence[Member]) -> Rollout:
    """The record of one model id and each member's view, from all ModelDeployments with that id."""
    if not members:
        return Rollout(None, {})
    ordered = sorted(members, key=lambda m: m.age_order)
    conflicts = {m.key: catalog_conflict(ordered[0], m) for m in ordered}
    serving = [m for m in ordered if conflicts[m.key] is None]
    split = shares(serving)
    views = {
        m.key: MemberView(
            weight=m.spec.traffic.weight,
            share=split.get(m.key, 0),
            deployments=len(serving),
            conflict=conflicts[m.key],
        )
        for m in ordered
    }
    return Rollout(model_record(serving), views)

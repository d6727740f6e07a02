"""Drift: does a live child still hold exactly what the operator would apply now? Pure.

Children are written with server-side apply (kube.KubeApi.apply): the API server removes a field the
operator set before and no longer sets, so a key dropped from the spec leaves the children too.
Applying on every pass would be correct but costs a write per child per resync, so a pass applies
only when something changed: the rendered object carries a hash of itself (APPLIED_HASH), which
changes with every change to what the operator sets, removals included; and a manual edit of a
field the operator sets shows as "rendered is no longer a subset of live". The API server adds
defaults (container terminationMessagePath, Service clusterIP, ...) and writes quantities in
canonical form ("0.5" becomes "500m"), hence a subset, with quantities and numbers compared by value.
Fields the operator never sets are left alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity ("500m", "32Gi", 4) as a number, or None if it is not one."""
    if isinstance(value, bool):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def _same_scalar(desired: Any, actual: Any) -> bool:
    if desired == actual and type(desired) is type(actual):
        return True
    if isinstance(desired, bool) or isinstance(actual, bool):
        return False
    wanted, have = quantity(desired), quantity(actual)
    return wanted is not None and wanted == have


def is_subset(desired: Any, actual: Any) -> bool:
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and is_subset(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(map(is_subset, desired, actual))
    return _same_scalar(desired, actual)


def with_applied_hash(desired: dict[str, Any], annotation: str) -> dict[str, Any]:
    """`desired` with an annotation holding a hash of everything else in it."""
    digest = hashlib.sha256(json.dumps(desired, sort_keys=True, default=str).encode()).hexdigest()[:16]
    meta = dict(desired.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), annotation: digest}
    return {**desired, "metadata": meta}


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """`desired` carries its applied hash: apply when the object is missing, was applied from another
    rendering (the hash differs), or was edited away from it."""
    return live is None or not is_subset(desired, live)

"""The fault suite's table, from the results file a run wrote (LEXORA_FAULT_RESULTS):

python -m faults.report .lexora/fault-results.json   # markdown, for docs/reliability.md
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HEADER = (
    "| fault | requests | served | failed (status: count) | lost usage | double charges | wrong charges "
    "| leaked holds | unbalanced accounts | time to recover |\n"
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
)


def recovery(seconds: float | None) -> str:
    if seconds is None:
        return "no request failed"
    if seconds == float("inf"):
        return "did not recover"
    return f"{seconds:.1f} s"


def row(result: dict[str, Any]) -> str:
    failed = ", ".join(f"{status}: {n}" for status, n in sorted(result["failed"].items())) or "none"
    cells = [
        result["fault"],
        result["requests"],
        result["served"],
        failed,
        result["lost_usage"],
        result["double_charges"],
        result["wrong_charges"],
        result["leaked_holds"],
        result["unbalanced_accounts"],
        recovery(result["recovered_after_s"]),
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(results: list[dict[str, Any]]) -> str:
    return "\n".join([HEADER, *(row(r) for r in results)])


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    loads = [r.get("load_average", 0.0) for r in results]
    print(table(results))
    print(
        f"\n{os.cpu_count()} CPU cores; the machine's 1-minute load average during the run: "
        f"{min(loads):.1f}-{max(loads):.1f}."
    )


if __name__ == "__main__":
    main(sys.argv[1])

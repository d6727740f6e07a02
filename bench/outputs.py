"""Where a gateway run's results go: its JSON file (headline keys first) and the results section of
docs/benchmarks.md, between the bench:results markers; `python -m bench render` writes them again
from a saved run with the current report code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import REPO, RESULTS, log, report
from bench.settings import SECTIONS

DOC = REPO / "docs" / "benchmarks.md"
DOC_BEGIN, DOC_END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def write_outputs(results: dict[str, Any]) -> Path:
    """latest.json (+ quick.json or full.json) and the results section of docs/benchmarks.md; a run
    of only some sections writes partial.json and partial.md instead."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["headline"] = report.headline(results)
    ordered = {**results["headline"], **{k: v for k, v in results.items() if k != "headline"}}
    ordered["headline"] = results["headline"]
    data = json.dumps(ordered, indent=1, default=str) + "\n"
    markdown = report.render_markdown(results)
    if set(results["config"]["sections"]) != set(SECTIONS):
        (RESULTS / "partial.json").write_text(data)
        (RESULTS / "partial.md").write_text(markdown)
        return RESULTS / "partial.json"
    (RESULTS / "latest.json").write_text(data)
    (RESULTS / ("quick.json" if results["config"]["quick"] else "full.json")).write_text(data)
    if DOC.exists() and DOC_BEGIN in DOC.read_text():
        text = DOC.read_text()
        before, rest = text.split(DOC_BEGIN, 1)
        after = rest.split(DOC_END, 1)[1] if DOC_END in rest else ""
        DOC.write_text(f"{before}{DOC_BEGIN}\n{markdown}{DOC_END}{after}")
    else:
        (RESULTS / "latest.md").write_text(markdown)
    return RESULTS / "latest.json"


def rerender(path: Path | None) -> int:
    """`python -m bench render [results.json]`: derive the headline and the docs' results section again
    from a saved run (latest.json by default) with the current bench/report.py, measuring nothing."""
    path = path or RESULTS / "latest.json"
    saved = json.loads(path.read_text())
    headline_keys = set(saved.get("headline") or {}) | {"headline"}
    written = write_outputs({k: v for k, v in saved.items() if k not in headline_keys})
    log(f"rendered {path} again: wrote {written}" + ("" if written.name == "partial.json" else f" and {DOC}"))
    return 0

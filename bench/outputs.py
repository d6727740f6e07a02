"""Where a gateway run's results go: one JSON file per kind of run, headline keys first
(bench/results/full.json or quick.json, so a quick run never overwrites the last full one, and the
same in latest.json, whichever kind the last complete run was; a run of only some sections writes
partial.json and partial.md, which are not committed), and the results
section of docs/benchmarks.md, between the bench:results markers. `python -m bench render` writes
them again from a saved run with the current report code, measuring nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import REPO, RESULTS, log, report
from bench.settings import SECTIONS

DOC = REPO / "docs" / "benchmarks.md"
DOC_BEGIN, DOC_END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def results_file(results: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    """The file a run's results belong in: its kind's, or partial.json for a run of some sections."""
    config = results["config"]
    if set(config["sections"]) != set(SECTIONS):
        return results_dir / "partial.json"
    return results_dir / f"{'quick' if config['quick'] else 'full'}.json"


def write_outputs(results: dict[str, Any], results_dir: Path = RESULTS, doc: Path = DOC) -> Path:
    """The run's results file and, for a complete run, the results section of `doc` (or, without
    the markers there, a markdown file beside the results file); returns the results file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    results["headline"] = report.headline(results)
    ordered = {**results["headline"], **{k: v for k, v in results.items() if k != "headline"}}
    ordered["headline"] = results["headline"]
    data = json.dumps(ordered, indent=1, default=str) + "\n"
    markdown = report.render_markdown(results)
    path = results_file(results, results_dir)
    path.write_text(data)
    if path.name != "partial.json":
        (path.parent / "latest.json").write_text(data)
    if path.name == "partial.json":
        path.with_suffix(".md").write_text(markdown)
    elif doc.exists() and DOC_BEGIN in doc.read_text():
        text = doc.read_text()
        before, rest = text.split(DOC_BEGIN, 1)
        after = rest.split(DOC_END, 1)[1] if DOC_END in rest else ""
        doc.write_text(f"{before}{DOC_BEGIN}\n{markdown}{DOC_END}{after}")
    else:
        path.with_suffix(".md").write_text(markdown)
    return path


def rerender(path: Path | None, results_dir: Path = RESULTS, doc: Path = DOC) -> int:
    """`python -m bench render [results.json]`: derive the headline and the docs' results section
    again from a saved run (by default the last full run, full.json, whose figures the docs show)
    with the current bench/report.py, measuring nothing."""
    path = path or results_dir / "full.json"
    saved = json.loads(path.read_text())
    headline_keys = set(saved.get("headline") or {}) | {"headline"}
    written = write_outputs({k: v for k, v in saved.items() if k not in headline_keys}, results_dir, doc)
    log(f"rendered {path} again: wrote {written}" + ("" if written.name == "partial.json" else f" and {doc}"))
    return 0

"""Where the gateway run's results go (bench.outputs): one file per kind of run, the docs' results
section rewritten between its markers and nowhere else, partial runs kept apart; and the ratios the
headline is made of (bench.report). Pure: a saved run rendered into a temporary directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import RESULTS, outputs, report
from bench.settings import SECTIONS

PAGE = "# Benchmarks\n\nprose before\n\n{begin}\nold results\n{end}\n\nprose after\n"


def _saved(kind: str) -> dict[str, Any]:
    """A committed run as write_outputs receives it: without its derived headline keys."""
    saved = json.loads((RESULTS / f"{kind}.json").read_text())
    return {k: v for k, v in saved.items() if k not in set(saved["headline"]) | {"headline"}}


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "benchmarks.md"
    path.write_text(PAGE.format(begin=outputs.DOC_BEGIN, end=outputs.DOC_END))
    return path


@pytest.mark.parametrize("kind", ["quick", "full"])
def test_a_complete_run_writes_its_own_file_and_the_docs_section(tmp_path: Path, doc: Path, kind: str) -> None:
    results_dir = tmp_path / "results"
    written = outputs.write_outputs(_saved(kind), results_dir, doc)
    assert written == results_dir / f"{kind}.json"
    # its kind's file, and the same run as the latest one
    assert sorted(p.name for p in results_dir.iterdir()) == sorted([f"{kind}.json", "latest.json"])
    assert (results_dir / "latest.json").read_text() == written.read_text()
    data = json.loads(written.read_text())
    assert list(data)[0] == "rps_ratio_vs_litellm"  # the headline keys first
    assert data["headline"]["rps_ratio_vs_litellm"] == data["rps_ratio_vs_litellm"]
    text = doc.read_text()
    before, rest = text.split(outputs.DOC_BEGIN)
    section, after = rest.split(outputs.DOC_END)
    assert before == "# Benchmarks\n\nprose before\n\n" and after == "\n\nprose after\n"
    assert "old results" not in section and f"mode: {kind}" in section
    # Rendering the same run again changes nothing.
    outputs.write_outputs(_saved(kind), results_dir, doc)
    assert doc.read_text() == text and written.read_text() == json.dumps(data, indent=1) + "\n"


def test_a_run_of_some_sections_leaves_the_docs_and_the_runs_files_alone(tmp_path: Path, doc: Path) -> None:
    results = _saved("quick")
    results["config"]["sections"] = [s for s in SECTIONS if s != "profile"]
    written = outputs.write_outputs(results, tmp_path, doc)
    assert written == tmp_path / "partial.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.md", "partial.json", "partial.md"]
    assert doc.read_text() == PAGE.format(begin=outputs.DOC_BEGIN, end=outputs.DOC_END)


def test_without_the_markers_the_markdown_goes_beside_the_results(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("no markers here\n")
    outputs.write_outputs(_saved("full"), tmp_path, doc)
    assert doc.read_text() == "no markers here\n"
    assert (tmp_path / "full.md").read_text().startswith("Run: ")


def test_render_defaults_to_the_last_full_run(tmp_path: Path, doc: Path) -> None:
    (tmp_path / "full.json").write_text((RESULTS / "full.json").read_text())
    assert outputs.rerender(None, tmp_path, doc) == 0
    assert "mode: full" in doc.read_text()


def test_ratios_and_added_latency() -> None:
    assert report.ratio(629.0, 100.0) == 6.29
    assert report.ratio(2.0, 3.0) == 0.667
    assert report.ratio(5.0, 0.0) is None  # no LiteLLM figure: no ratio, not a division error
    over = {"n": 10, "p50": 3.5, "p99": 9.25, "max": 20.0, "mean": 4.0}
    base = {"n": 10, "p50": 1.25, "p99": 2.0, "max": 3.0}
    # percentiles only, and only those both sides have
    assert report.added(over, base) == {"p50": 2.25, "p99": 7.25}
    assert math.isnan(report.percentile([], 99))

"""The user-facing docs are references: no work-item numbers or story of the work, no absolute paths of a
development machine, and every local link and figure they name exists."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

DOCS = ["README.md", "models/MODEL_CARD.md", "BENCHMARKS.md", "DATASETS.md", "docs/ROS.md"]

# (what, pattern): each is a kind of reference a user cannot follow.
FORBIDDEN = [
    ("work-item reference", re.compile(r"\b(?:issue|ticket|work[- ]item|PR)s?\s*#?\d+", re.I)),
    ("work-item reference", re.compile(r"(?<![\w&])#\d+\b")),
    ("work-item reference", re.compile(r"\b(?:issue's|this issue|the issue)\b", re.I)),
    ("story of the work", re.compile(r"\bsessions?\b", re.I)),
    ("absolute machine path", re.compile(r"(?<![\w.~$])/(?:work|home|root|Users|mnt|scratch|tmp)/")),
]


def offending_lines(text: str) -> list[str]:
    """``"line N: <kind>: <line>"`` for every line of ``text`` that matches a forbidden pattern."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FORBIDDEN:
            if pattern.search(line):
                found.append(f"line {number}: {kind}: {line.strip()[:160]}")
                break
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_docs_have_no_work_items_story_or_machine_paths(doc):
    bad = offending_lines((REPO / doc).read_text(encoding="utf-8"))
    assert not bad, f"{doc}:\n" + "\n".join(bad)


@pytest.mark.parametrize("text, hits", [
    ("Against issue 13's targets", 1),
    ("see #19 for details", 1),
    ("measured in session 3", 1),
    ("sray-eval --data /work/data/sray_synth/test", 1),
    ("cd /home/alice/ros2_ws", 1),
    ("No GPU was lent to this issue", 1),
    ("sray-eval --data \"$SRAY_DATA/sray_synth/test\"", 0),
    ("cd ~/ros2_ws/src && ls sample_data/", 0),
    ("# Heading\n## Section 2", 0),
    ("colours `#1f77b4`-like hex and C# code", 0),
])
def test_the_check_catches_each_kind(text, hits):
    assert len(offending_lines(text)) == hits, offending_lines(text)


@pytest.mark.parametrize("doc", DOCS)
def test_local_links_and_figures_exist(doc):
    path = REPO / doc
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, f"{doc} links to missing files: {missing}"


def test_benchmark_commands_are_recorded_without_machine_paths(monkeypatch):
    """bench_model.py writes its command line into BENCHMARKS.md: data and repository paths become portable."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_model_for_docs", REPO / "benchmarks" / "bench_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("SRAY_DATA", "/srv/lab/data")
    assert bench.portable_path("/srv/lab/data/hololens_000") == "$SRAY_DATA/hololens_000"
    assert bench.portable_path(str(bench.ROOT / "models" / "sray_default.pt")) == "models/sray_default.pt"
    assert bench.portable_path("--threads") == "--threads"

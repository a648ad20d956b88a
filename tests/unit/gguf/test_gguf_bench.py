"""benchmarks/bench_gguf.py prints the README's GGUF row from its own figures, CPU seconds beside the wall
time (the machine is shared: the lead re-measures on a quiet one and pastes the row)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_gguf import readme_row

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_the_printed_row_replaces_the_readme_row_cell_for_cell() -> None:
    row = readme_row((0.25, 41.0, 0.21), (30.1, 524.0, 29.0))
    first = row.split(" | ")[0]
    ours = [line for line in README.splitlines() if line.startswith(first)]
    assert len(ours) == 1 and ours[0].count("|") == row.count("|")
    assert "0.25 s (0.21 s CPU) | 41 MiB |" in row and "30.1 s, 524 MiB" in row

"""What a rewrite did: the write-time log run() fills, and the frozen RewriteResult it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ExitCode
from ..notes import Note
from ..state import SCHEMA_VERSION, Checkpoint
from ..storage import unique_storage_bytes
from .plan import Change, Plan, entry_key, removed_sharing, rewrite_note, saved_bytes


@dataclass
class WriteLog:
    """Facts learnt while writing (casts with their losses, notes): local to one run(), never the plan."""

    changes: list[Change] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    progress: Callable[[int, int], None] | None = None  # (bytes written, bytes to write), injected by the CLI
    done: int = 0
    total: int | None = None

    def note(self, text: str) -> None:
        note = rewrite_note(text)
        if note not in self.notes:
            self.notes.append(note)

    def expect(self, nbytes: int) -> None:
        """The tensor bytes this write will move; the first writer to know sets it (shards: the whole)."""
        if self.total is None:
            self.total = nbytes

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress is not None:
            self.progress(self.done, max(self.total or 0, self.done))


@dataclass(frozen=True)
class Summary:
    """Entries, unique tensor storage bytes and dtype counts of one checkpoint."""

    entries: int
    tensor_bytes: int
    dtypes: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, ck: Checkpoint) -> Summary:
        tensors = [e for e in ck.entries if e.tensor is not None]
        dtypes: dict[str, int] = {}
        for e in tensors:
            assert e.tensor is not None
            dtypes[e.tensor.dtype] = dtypes.get(e.tensor.dtype, 0) + 1
        return cls(len(ck.entries), unique_storage_bytes(tensors)[1], tuple(sorted(dtypes.items())))

    def to_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "tensor_bytes": self.tensor_bytes, "dtypes": dict(self.dtypes)}


@dataclass(frozen=True, kw_only=True)
class RewriteResult:
    """The plan as written (with any unsupported tensors dropped), where it went, and what changed."""

    plan: Plan
    output: str | None  # None: a dry run without -o; "-": stdout
    out_format: str
    before: Checkpoint
    after: Checkpoint | None  # None for a dry run
    dry_run: bool
    changes: tuple[Change, ...]  # the plan's, then those made while writing (casts and their losses)
    notes: tuple[Note, ...]
    exit_code: ExitCode = ExitCode.OK  # refusals (--strict, strict loading) raise instead: nothing is written then
    planned_bytes: int | None = None  # tensor bytes the output holds (at least), known before writing
    columns: ClassVar[tuple[str, ...]] = ("name", "what", "detail", "nbytes", "overflow", "underflow")

    @property
    def input(self) -> str:
        return self.before.path

    @property
    def saved_bytes(self) -> int:
        """Tensor storage bytes the removed entries free (storage shared with kept entries stays)."""
        return saved_bytes(self.plan)

    @property
    def removed_sharing(self) -> tuple[int, int]:
        """(removed bytes on storage kept tensors still use, removed bytes repeating a removed storage)."""
        return removed_sharing(self.plan)

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """(what, before, after) rows for the before/after table."""
        b = Summary.of(self.before)
        a = Summary.of(self.after) if self.after is not None else None

        def dtypes(s: Summary) -> str:
            return ", ".join(f"{k} x{v}" for k, v in s.dtypes)

        planned = f"~{self.planned_bytes:,} B" if self.planned_bytes is not None else "-"
        return [("entries", str(b.entries), str(a.entries) if a else "-"),
                ("tensor bytes", f"{b.tensor_bytes:,} B", f"{a.tensor_bytes:,} B" if a else planned),
                ("dtypes", dtypes(b), dtypes(a) if a else "-")]

    @property
    def md_title(self) -> str:
        verb = "would write" if self.dry_run else "wrote"
        where = self.output if self.output is not None else "(no -o given)"
        return f"{self.input}: {verb} {where} ({self.out_format}), saved {self.saved_bytes:,} B"

    def rows(self) -> list[dict[str, Any]]:
        """One row per change (keys: `columns`), for CSV and Markdown. A dry run also lists the casts it
        would make; their losses are unknown until the values are read (None)."""
        rows = [{"name": c.name, "what": c.what, "detail": c.detail, "nbytes": c.nbytes, "overflow": c.overflow,
                 "underflow": c.underflow} for c in self.changes]
        if self.dry_run and self.plan.cast:
            dtypes = {entry_key(e): e.tensor.dtype for e in self.before.entries if e.tensor is not None}
            rows += [{"name": name, "what": "cast", "detail": f"{dtypes.get((group, name))} -> {dtype}", "nbytes": 0,
                      "overflow": None, "underflow": None} for (group, name), dtype in self.plan.cast.items()]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "input": self.input,
            "output": self.output,
            "out_format": self.out_format,
            "dry_run": self.dry_run,
            "changes": self.rows(),
            "saved_bytes": self.saved_bytes,
            "removed_sharing_kept_storage_bytes": self.removed_sharing[0],
            "removed_sharing_removed_storage_bytes": self.removed_sharing[1],
            "planned_tensor_bytes": self.planned_bytes,
            "notes": [n.text for n in self.notes],
            "before": Summary.of(self.before).to_dict(),
            "after": Summary.of(self.after).to_dict() if self.after is not None else None,
        }

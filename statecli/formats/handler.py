"""What a format is to statecli: a FormatHandler that recognises its files, reads their metadata and
scans them for payloads. formats/registry.py lists the handlers in the order they are asked; reading
(`read_raw`) and scanning (`scan_path`) are each one loop over that list, so a new format is one
module and one line in the registry."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from ..errors import StatecliError, UnsafeContent
from ..state import Checkpoint, Format

if TYPE_CHECKING:
    from ..io.values import ValueReader
    from ..pickle.pickles import Findings
    from ._common import RawCheckpoint


class FormatHandler(Protocol):
    """One on-disk format. `magic`: whether `detect` needs the file's first bytes; handlers without
    magic (a folder layout, an index by its name) are asked first, before any byte is read."""

    format: Format
    magic: bool

    @property
    def writer(self) -> Callable[..., None] | None:
        """The format's writer, where statecli writes it (each format's own signature)."""
        ...

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        """Whether `name` (its first 512 bytes `head`, empty when not read) is this format."""
        ...

    def read(self, source: str) -> RawCheckpoint:
        """The metadata of `source` (no tensor bytes); UnsafeContent where loading would run code."""
        ...

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        """Every global, call and finding of `source` into `findings`; the format it turned out to be
        (a torch zip can be a TorchScript archive or an .npz). Errors propagate to the caller."""
        ...

    def values(self, ck: Checkpoint) -> AbstractContextManager[ValueReader]:
        """The reader of this format's tensor values (stats, diff, show, rewrites)."""
        ...


class BaseHandler:
    """Defaults every handler shares: magic bytes, values read in place by io/values (a format with
    packed or quantized values overrides `values`), no writer."""

    format: Format
    magic: bool = True
    writer: Callable[..., None] | None = None

    def values(self, ck: Checkpoint) -> AbstractContextManager[ValueReader]:
        from ..io.values import value_reader

        return value_reader(ck)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format.value!r}>"


def record(acc: Findings, exc: StatecliError) -> None:
    """An error met while scanning, as scan reports it: a finding (exit 3) when loading would be
    refused as unsafe (a compression bomb), else an error (the file is unreadable, exit 2)."""
    if isinstance(exc, UnsafeContent):
        acc.problems.append(exc.problem)
    else:
        acc.errors.append(exc.problem)


def merge(acc: Findings, sub: Findings, name: str, calls_named: bool = True) -> None:
    """A part's findings (a shard, a DCP item) into the whole's, each place prefixed with the part."""
    from ..pickle.pickles import GlobalRef

    acc.globals += [GlobalRef(g.name, f"{name}: {g.where}", g.opcode, g.verdict, g.detail) for g in sub.globals]
    acc.calls += [(o, c, f"{name}: {w}") for o, c, w in sub.calls] if calls_named else list(sub.calls)
    acc.problems += [f"{name}: {p}" for p in sub.problems]
    acc.errors += [f"{name}: {p}" for p in sub.errors]
    acc.pickles += sub.pickles


__all__ = ["BaseHandler", "FormatHandler", "merge", "record"]

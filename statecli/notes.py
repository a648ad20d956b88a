"""Messages about a checkpoint or a result: typed records each step returns with what it made, which
render prints on stderr (warnings first, then notes), never on stdout."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class NoteKind(StrEnum):
    """What a message about a checkpoint is about; each kind is either a warning or a note."""

    UNTRUSTED_GLOBALS = "untrusted globals"  # torch.load would need weights_only=False
    READER = "reader"  # a format reader's warning (big-endian, TorchScript, a shard's extra tensors)
    MODEL = "model definition"  # what building the model definition could not do
    LOAD_REPORT = "load report"  # the model's loader could not run as asked; the report falls back
    CLASSIFICATION = "classification"  # how the entries were read: prefixes, shared references, devices
    LAYOUT = "layout"  # a training layout told by the file or the files beside it
    CONFIG = "config"  # the model definition: a config.json that could not be used, and why
    REWRITE = "rewrite"  # what a rewrite keeps or drops of the input
    COMPARISON = "comparison"  # what a diff compared as the same although stored differently (ties, sharing)
    BASELINE = "baseline"  # an accepted finding whose acceptance expired (scan/check --baseline)

    @property
    def is_warning(self) -> bool:
        return self in _WARNING_KINDS


_WARNING_KINDS = frozenset({NoteKind.UNTRUSTED_GLOBALS, NoteKind.READER, NoteKind.MODEL, NoteKind.LOAD_REPORT,
                            NoteKind.BASELINE})


@dataclass(frozen=True)
class Note:
    """One message a step returns with its result; render prints them on stderr, never stdout."""

    kind: NoteKind
    text: str

    @property
    def is_warning(self) -> bool:
        return self.kind.is_warning


def warning_texts(notes: Iterable[Note]) -> list[str]:
    return [n.text for n in notes if n.kind.is_warning]


def note_texts(notes: Iterable[Note]) -> list[str]:
    return [n.text for n in notes if not n.kind.is_warning]

"""Opening a checkpoint, the one way every command does it (inspect, check, the rewrites, browse):
read and classify it, find the model definition to classify against, and carry each step's notes
on the frozen Checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .classify import with_model
from .formats import RawCheckpoint
from .load import load_with_raw, with_prefix
from .notes import Note, NoteKind
from .state import Checkpoint, gc_paused
from .state import ModelChoice as ModelChoice  # re-exported: the commands and the API name it from here


@dataclass(frozen=True)
class Opened:
    """An opened checkpoint: classified (against `model` when one was asked for and classify was set),
    the raw tree when asked to keep it, and the model definition (modeldef.ModelInfo) or None."""

    checkpoint: Checkpoint
    raw: RawCheckpoint | None
    model: Any


def open_checkpoint(path: str, key: str | None = None, model: ModelChoice | None = None, *,
                    strip_prefix: tuple[str, ...] = (), add_prefix: str | None = None, keep_raw: bool = False,
                    classify_by_model: bool = True) -> Opened:
    """The one way every command opens a checkpoint: read and classify it, find the model definition,
    and carry the notes of each step on the Checkpoint. `keep_raw` keeps the raw object tree (the
    rewrites need it; otherwise it is dropped while the collector is paused)."""
    with gc_paused():
        ck, raw = load_with_raw(path, key, strip_prefix)
        ck = with_prefix(ck, add_prefix)
        kept = raw if keep_raw else None
        del raw  # unless kept, the raw tree goes while the collector is still paused
    info = None
    if model is not None:
        from .modeldef import model_for

        info, notes = model_for(path, model.model, list(model.model_args), model.model_kwargs, model.hf_config,
                                model.auto_hf)
        ck = ck.with_notes(Note(NoteKind.CONFIG, n) for n in notes)
        if info is not None and classify_by_model:
            ck = with_model(ck, info)
    return Opened(ck, kept, info)

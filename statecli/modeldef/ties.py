"""Tied keys a checkpoint leaves out but records: which stored tensor each one is, and on what evidence
(the file's own safetensors metadata, or the tie rules of the Hugging Face model its config.json
describes). `diff` compares such a key as the tensor it names; a .pt rewrite writes it again."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..state import Checkpoint, Entry, Format


class AliasSource(enum.StrEnum):
    METADATA = "recorded in its safetensors metadata"
    HF_CONFIG = "tied by transformers' rules for the model its config.json describes"
    CONFIG_FLAG = ("tied by tie_word_embeddings in its config.json and stored on one storage by the other file "
                   "(transformers is not installed to apply the model's own tie rules)")


@dataclass(frozen=True)
class Alias:
    """`name` is left out of the checkpoint and stands for its stored key `target`."""

    name: str
    target: str
    source: AliasSource


def recorded_aliases(ck: Checkpoint, wanted: Collection[str] | None = None,
                     partner: Collection[Entry] = ()) -> dict[str, Alias]:
    """{left-out key: Alias} for the model state's tied keys the checkpoint records (only the names in
    `wanted`, when given). The metadata is read first; the config beside the file (a Hugging Face
    model built on meta, cached; torch and transformers imported on a miss) is consulted only for
    wanted names the metadata leaves unexplained, so a checkpoint with nothing missing costs nothing."""
    stored = {e.name: e for e in ck.entries if e.group == "" and e.tensor is not None}
    out: dict[str, Alias] = {}
    if ck.format is Format.SAFETENSORS:
        from ..formats.safetensors import recorded_aliases as from_metadata

        for name, target in from_metadata(ck.metadata, stored).items():
            if wanted is None or name in wanted:
                out[name] = Alias(name, target, AliasSource.METADATA)
    left = None if wanted is None else [n for n in wanted if n not in out and n not in stored]
    if left is None or left:
        for name, target in _config_ties(ck, stored).items():
            if (left is None or name in left) and name not in out:
                out[name] = Alias(name, target, AliasSource.HF_CONFIG)
    if left and partner:
        for name, target in _flag_ties(ck, stored, [n for n in left if n not in out], partner).items():
            out[name] = Alias(name, target, AliasSource.CONFIG_FLAG)
    return out


def _flag_ties(ck: Checkpoint, stored: Mapping[str, Entry], left: list[str], partner: Collection[Entry]) -> dict[str, str]:
    """Without transformers (its tie rules decide where it is installed): a left-out key the partner
    file stores on the same storage as a key this checkpoint has, when the config.json beside this
    checkpoint ties word embeddings (`tie_word_embeddings`, true by default in transformers)."""
    import importlib.util

    from ..io.limits import read_json_file
    from ..io.source import is_remote
    from .model import find_hf_config

    if not left or is_remote(ck.path) or importlib.util.find_spec("transformers") is not None:
        return {}
    cfg = find_hf_config(ck.path)
    try:
        tied = cfg is not None and read_json_file(cfg).get("tie_word_embeddings", True) is True
    except (OSError, ValueError, AttributeError):
        tied = False
    if not tied:
        return {}
    by_storage: dict[object, list[str]] = {}
    for e in partner:
        if e.tensor is not None and e.tensor.storage_id is not None and e.group == "":
            by_storage.setdefault(e.tensor.storage_id, []).append(e.name)
    out = {}
    for e in partner:
        if e.name in left and e.tensor is not None and e.tensor.storage_id is not None:
            mates = [n for n in by_storage[e.tensor.storage_id] if n != e.name and n in stored]
            mine = stored[mates[0]].tensor if len(mates) == 1 else None
            if mine is not None and mine.shape == e.tensor.shape:
                out[e.name] = mates[0]
    return out


def alias_entry(alias: Alias, target: Entry) -> Entry:
    """The left-out key as an entry: the target's tensor (same storage) under the alias's name."""
    return Entry(alias.name, target.tensor, kind=target.kind, evidence=target.evidence)


def _config_ties(ck: Checkpoint, stored: Mapping[str, Entry]) -> dict[str, str]:
    """Keys the Hugging Face model of the config.json beside the checkpoint ties to a stored key, when
    the file lacks them (save_pretrained leaves them out; from_pretrained ties them again)."""
    from ..io.source import is_remote
    from .choose import model_for

    if is_remote(ck.path):
        return {}
    try:
        info, _ = model_for(ck.path, None, None, None, None, auto_hf=True)
    except Exception:  # noqa: BLE001 - a config that cannot be built explains nothing; never an error here
        return {}
    if info is None:
        return {}
    out = {}
    for slot in info.slots.values():
        if slot.tied_to and slot.name not in stored and slot.tied_to in stored:
            out[slot.name] = slot.tied_to
    return out

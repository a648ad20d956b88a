"""Load-report lines whose reason takes more than comparing key sets: which tied keys from_pretrained
re-ties or leaves untied (values compared where the file holds both), and which file keys a failed
conversion (an MoE expert fusion) lacks."""

from __future__ import annotations

import re
from typing import Any

from ..state import Checkpoint, TensorInfo
from ..vocab import ReportProblem
from .model import ModelInfo, ReportLine


def fused_sources(info: ModelInfo, file_tensors: dict[str, TensorInfo]) -> dict[str, tuple[list[str], list[str]]]:
    """{entry from_pretrained fuses from several file keys: (the file keys it takes, the ones it expects
    and the file lacks)}: an MoE expert stack short of an expert."""
    assert info.hf is not None
    convs = {k: conv for k, (_, conv) in info.hf.renamed(file_tensors).items() if conv is not None}
    sources: dict[str, list[str]] = {}
    converters: dict[str, Any] = {}
    for key, m in info.hf.map_keys(k for k in file_tensors if k in convs).items():
        for target in m.targets:
            sources.setdefault(target, []).append(key)
            converters[target] = convs[key]
    out = {}
    for target, present in sources.items():
        slot = info.slots.get(target)
        out[target] = (present, absent_sources(converters[target], present, slot.shape if slot else ()))
    return out


def lacking_text(lacking: list[str], built_from: int) -> str:
    shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
    return f"from_pretrained builds it from {built_from} file keys and the file lacks {len(lacking)}: {shown}"


def failed_lines(info: ModelInfo, file_tensors: dict[str, TensorInfo], errors: dict[str, str]) -> list[ReportLine]:
    """A conversion from_pretrained could not run (an MoE fusion short of an expert), explained by the
    file keys it is built from and the ones the file lacks; transformers' own message (a traceback)
    is never shown."""
    fused = fused_sources(info, file_tensors)
    out = []
    for target in sorted(errors):
        present, lacking = fused.get(target, ([], []))
        if lacking:
            why = lacking_text(lacking, len(present) + len(lacking))
            fix = "restore the missing tensors, or check the expert count in config.json against the file"
        else:
            why = (f"from_pretrained could not build it from the {len(present)} file key(s) it takes"
                   f"{' (' + present[0] + ', ...)' if present else ''}")
            fix = "check the config against the file"
        out.append(ReportLine(target, ReportProblem.CONVERSION_FAILED, why, fix, strict_blocking=True))
    return out


def absent_sources(conv: Any, present: list[str], shape: tuple[int, ...]) -> list[str]:
    """The file keys a transformers WeightConverter expects for one target and the file lacks: each
    source pattern ('.experts.*.w1.weight') at every expert index, the count taken from the target's
    first dimension where the converter stacks a module list (MergeModulelist), else from the indices
    any pattern has."""
    if conv is None or not present:
        return []
    patterns = [(p, re.compile(re.escape(p).replace(r"\*", r"(\d+)"))) for p in conv.source_patterns]
    found: dict[str, set[int]] = {}
    around: tuple[str, str] | None = None  # the key's text before and after the pattern
    for key in present:
        for p, rx in patterns:
            m = rx.search(key)
            if m and m.groups():
                found.setdefault(p, set()).add(int(m.group(1)))
                around = around or (key[:m.start()], key[m.end():])
                break
    if around is None:
        return []
    stacked = any(type(op).__name__ == "MergeModulelist" for op in getattr(conv, "operations", ()))
    expected = set(range(shape[0])) if stacked and shape else set().union(*found.values())
    return [around[0] + p.replace("*", str(i)) + around[1]
            for i in sorted(expected) for p, _ in patterns if "*" in p and i not in found.get(p, set())]


def tie_groups(info: ModelInfo) -> dict[str, tuple[str, ...]]:
    """{state key: every state key holding the same Parameter, itself included, in state_dict order}."""
    root: dict[str, str] = {}

    def find(k: str) -> str:
        while root.get(k, k) != k:
            k = root[k]
        return k

    for slot in info.slots.values():
        if slot.tied_to:
            a, b = find(slot.name), find(slot.tied_to)
            if a != b:
                root[a] = b
    groups: dict[str, list[str]] = {}
    for k in info.state_keys:
        if k in root or any(root.get(x) == k for x in root):
            groups.setdefault(find(k), []).append(k)
    return {k: tuple(g) for g in groups.values() if len(g) > 1 for k in g}


def untied_lines(ck: Checkpoint, info: ModelInfo, file_tensors: dict[str, TensorInfo]) -> list[ReportLine]:
    """Tied keys the file holds with different values: from_pretrained then unties them (each keeps its
    own); load_state_dict copies both into the one shared Parameter, the last key's values winning.
    Values are read only for such pairs that do not share storage."""
    pairs = []
    seen: set[str] = set()
    for key, group in tie_groups(info).items():
        held = [k for k in group if k in file_tensors]
        if key in seen or len(held) < 2:
            continue
        seen |= set(group)
        pairs += [(held[0], other, held[-1]) for other in held[1:]]
    if not pairs:
        return []
    from ..io.values import same_bytes, value_reader

    out = []
    with value_reader(ck) as reader:
        for first, other, last in pairs:
            a, b = file_tensors[first], file_tensors[other]
            if a.storage_id is not None and a.storage_id == b.storage_id and a.storage_offset == b.storage_offset:
                continue  # one storage: the same tensor saved twice (torch .bin files of tied models)
            try:
                equal = a.shape == b.shape and a.dtype == b.dtype and same_bytes(reader.array(a), reader.array(b))
            except Exception:  # noqa: BLE001 - a tensor no reader can hand out stays unjudged, never an error
                continue
            if not equal:
                out.append(ReportLine(other, ReportProblem.UNTIED, (
                    f"tied to {first} in this model, but the file holds both with different values: "
                    + ("from_pretrained loads them untied (two Parameters); " if info.hf is not None else "")
                    + f"load_state_dict fills the one shared Parameter with {last}'s values"),
                    "set tie_word_embeddings=false in config.json to keep both, or drop the key that is wrong",
                    blocking=False, strict_blocking=False))
    return out

"""What loading a checkpoint into a model would report, each line explained with its fix: plain
load_state_dict(strict=True) for any model, and from_pretrained's verdict for a Hugging Face one."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from typing import Any

from ..notes import Note, NoteKind
from ..state import Checkpoint, Kind, TensorInfo, prefix_matches
from .model import ModelInfo, ReportLine


def load_report(ck: Checkpoint, info: ModelInfo) -> list[ReportLine]:
    """The load report of `ck` against `info` (its notes: load_report_notes)."""
    return load_report_notes(ck, info)[0]


def load_report_notes(ck: Checkpoint, info: ModelInfo) -> tuple[list[ReportLine], list[Note]]:
    """The load report of `ck` against `info`, and the warnings of what could not run as asked. Lines
    are `blocking` when the model's own loader reports them (from_pretrained for a Hugging Face
    model); `fails_strict` says whether plain load_state_dict(strict=True) would."""
    if info.memo is not None:  # cache.py: stored for this checkpoint's keys, else computed live and stored
        return info.memo.load_report(ck, info)
    notes: list[Note] = []
    file_tensors = {e.name: e.tensor for e in ck.entries if e.group == "" and e.tensor is not None}
    file_values = {e.name for e in ck.entries if e.group == "" and e.tensor is None}
    lines = _strict_lines(ck, info, file_tensors, file_values, notes)
    if info.hf is None or ck.is_pickled_module:  # torch.load gives a pickled module back whole
        return lines, notes
    try:
        verdict = info.hf.verdict({k: (tuple(t.shape), t.dtype) for k, t in file_tensors.items()})
    except Exception as exc:  # noqa: BLE001 - transformers internals may refuse; keep the strict verdict
        notes.append(Note(NoteKind.LOAD_REPORT, f"from_pretrained's loading step could not run on meta tensors "
                          f"({type(exc).__name__}: {exc}); the report shows load_state_dict(strict=True)"))
        return lines, notes
    return _from_pretrained(info, file_tensors, lines, verdict), notes


def _strict_lines(ck: Checkpoint, info: ModelInfo, file_tensors: dict[str, TensorInfo],
                  file_values: set[str], notes: list[Note]) -> list[ReportLine]:
    import torch

    lines: list[ReportLine] = []
    mismatched: set[str] = set()
    casts: dict[tuple[str, str], list[str]] = {}
    for name, t in file_tensors.items():
        slot = info.slots.get(name)
        if slot is None or slot.kind == Kind.BUFFER_NP or name not in info.state_keys:
            continue
        if tuple(t.shape) != slot.shape:
            mismatched.add(name)
            lines.append(ReportLine(name, "shape mismatch",
                                    f"file has {list(t.shape)}, model expects {list(slot.shape)}",
                                    "check --model-arg values (e.g. num_classes, vocab size) or drop the key"))
        elif t.dtype != slot.dtype:
            casts.setdefault((t.dtype, slot.dtype), []).append(name)
    for (have, want), names in casts.items():  # uniform differences in one line, not one per tensor
        key = names[0] if len(names) == 1 else f"({len(names)} tensors)"
        lines.append(ReportLine(key, "dtype differs", f"file has {have}, model has {want}; "
                                "load_state_dict copies with a cast", None, blocking=False))
    # torch's own logic (hooks such as BatchNorm's num_batches_tracked handling) on meta tensors.
    fake: dict[str, Any] = {}
    for name, t in file_tensors.items():
        if name in mismatched:
            slot = info.slots[name]
            shape, dtype = slot.shape, slot.dtype
        else:
            shape, dtype = t.shape, t.dtype
        try:
            fake[name] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        except (AttributeError, RuntimeError, TypeError):
            fake[name] = torch.empty(0, device="meta")
    for name in file_values:
        fake[name] = None
    if ck.torch_metadata is not None:
        fake_sd: Any = type("SD", (dict,), {})(fake)
        fake_sd._metadata = ck.torch_metadata
    else:
        fake_sd = fake
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = info.model.load_state_dict(fake_sd, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except Exception as exc:  # noqa: BLE001 - custom hooks may refuse meta tensors; fall back to key sets
        notes.append(Note(NoteKind.LOAD_REPORT, f"the model's load_state_dict could not run on meta tensors "
                          f"({type(exc).__name__}); the report compares key sets"))
        missing = [k for k in info.state_keys if k not in file_tensors and k not in file_values]
        unexpected = [k for k in list(file_tensors) + sorted(file_values) if k not in info.state_keys]
    lines += _conversions(info, unexpected, missing)
    fix = _prefix_fix(unexpected, missing)
    state = set(info.state_keys)
    for key in missing:
        slot = info.slots.get(key)
        if slot is not None and slot.tied_to and slot.tied_to in file_tensors:
            lines.append(ReportLine(key, "missing", f"tied to {slot.tied_to} in this model (one Parameter); the "
                                    "file stores it once under that name, which fills both",
                                    "load with strict=False, or tie after loading"))
        elif key.endswith("num_batches_tracked"):
            lines.append(ReportLine(key, "missing", "BatchNorm batch counter: files from older PyTorch or "
                                    "hand-built state dicts lack it; it only matters for momentum=None",
                                    "load with strict=False (the counter starts at 0)"))
        elif fix and (fix[0] == "--strip-prefix" and any(u == fix[1] + key for u in unexpected)
                      or fix[0] == "--add-prefix" and key.startswith(fix[1]) and key[len(fix[1]):] in unexpected):
            lines.append(ReportLine(key, "missing", f"present in the file under another prefix ({fix[1]!r})",
                                    f"{fix[0]} {fix[1]}"))
        else:
            lines.append(ReportLine(key, "missing", f"the model has this {slot.kind if slot else 'entry'}; "
                                    "the file does not", "train/initialise it, or load with strict=False"))
    pickled = ck.is_pickled_module
    for key in unexpected:
        slot = info.slots.get(key)
        if slot is not None and slot.kind == Kind.BUFFER_NP and pickled:
            lines.append(ReportLine(key, "unexpected", "a non-persistent buffer, stored because the file pickles the "
                                    "whole module (torch.save(model)); model.state_dict() leaves it out",
                                    "nothing to do: torch.load returns the module with it", blocking=False,
                                    strict_blocking=True))
        elif slot is not None and slot.kind == Kind.BUFFER_NP:
            lines.append(ReportLine(key, "unexpected", "a non-persistent buffer in this model, present in the file "
                                    "(written by an older version of the code); the model rebuilds it itself",
                                    "safe to drop: load with strict=False or remove the key"))
        elif fix and (fix[0] == "--strip-prefix" and key[len(fix[1]):] in state and key.startswith(fix[1])
                      or fix[0] == "--add-prefix" and fix[1] + key in state):
            lines.append(ReportLine(key, "unexpected", f"matches a model key after {fix[0]} {fix[1]}",
                                    f"{fix[0]} {fix[1]}"))
        else:
            lines.append(ReportLine(key, "unexpected", "the file has this key; the model has no such "
                                    "parameter or buffer", "remove it, or load with strict=False"))
    return lines


def _conversions(info: ModelInfo, unexpected: list[str], missing: list[str]) -> list[ReportLine]:
    """Lines for unexpected keys that the model's loader renames or fuses into missing ones; both
    lists lose the keys explained this way (in place)."""
    lines: list[ReportLine] = []
    want = set(missing)
    filled: set[str] = set()
    renamed: list[tuple[str, str, str]] = []  # (file key, model key, rule)
    if info.hf is not None:
        sources: dict[str, list[str]] = {}
        for key, m in info.hf.map_keys(unexpected).items():
            if not m.how or not set(m.targets) <= want:
                continue
            if len(m.targets) == 1 and not m.how.startswith("converted"):
                prefix = m.how.startswith("base-model prefix")
                renamed.append((key, m.targets[0], m.how.split(" by from_pretrained")[0] if prefix else ""))
            else:
                for t in m.targets:
                    sources.setdefault(t, []).append(key)
            filled |= set(m.targets)
            unexpected.remove(key)
        lines += _renamed_lines(renamed, strict=True)
        lines += _converted_lines(sources)
    else:
        for src, (dst, why) in _hf_renames(info, unexpected, missing).items():
            renamed.append((src, dst, why))
            unexpected.remove(src)
            filled.add(dst)
        lines += _renamed_lines(renamed, strict=False)
    missing[:] = [k for k in missing if k not in filled]
    return lines


def _rule(key: str, new: str) -> str:
    """The rename between two keys as its changed dotted parts ('attention.query' -> 'q_proj'; 'gamma'
    -> 'weight'), layer numbers generalised: one rule for every layer."""
    import difflib

    a, b = key.split("."), new.split(".")
    steps = [f"{'.'.join(a[i1:i2]) or '(nothing)'!r} -> {'.'.join(b[j1:j2]) or '(nothing)'!r}"
             for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if tag != "equal"]
    return re.sub(r"\b\d+\b", "N", ", ".join(steps))


def _renamed_lines(renamed: list[tuple[str, str, str]], strict: bool) -> list[ReportLine]:
    """One line per rename rule, with its count (every key in `keys`): a full-size model renames
    hundreds of keys by a handful of rules."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, new, rule in renamed:
        groups.setdefault(rule or _rule(key, new), []).append((key, new))
    lines = []
    for rule, pairs in groups.items():
        key, new = pairs[0]
        head = key if len(pairs) == 1 else f"({len(pairs)} keys)"
        example = f"{key} -> {new}" if len(pairs) == 1 else f"e.g. {key} -> {new}"
        lines.append(ReportLine(head, "renamed", f"differ{'s' if len(pairs) == 1 else ''} only by a rename "
                                f"transformers applies on load: {rule} ({example})",
                                "load with from_pretrained (it renames the key)", blocking=False,
                                strict_blocking=True if strict else None, keys=tuple(k for k, _ in pairs)))
    return lines


def _converted_lines(sources: dict[str, list[str]]) -> list[ReportLine]:
    """One line per fused entry pattern (layer numbers generalised), with every target in `keys`."""
    groups: dict[str, list[str]] = {}
    for target in sources:
        groups.setdefault(re.sub(r"\.\d+\.", ".N.", target), []).append(target)
    lines = []
    for pattern, targets in groups.items():
        keys = [k for t in targets for k in sources[t]]
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        head = targets[0] if len(targets) == 1 else f"({len(targets)} entries) {pattern}"
        lines.append(ReportLine(head, "converted", f"from_pretrained builds {'it' if len(targets) == 1 else 'each'} "
                                f"from {len(keys)} file key{'s' if len(keys) > 1 else ''} ({shown})",
                                "load with from_pretrained (it converts the keys)", blocking=False,
                                strict_blocking=True, keys=tuple(targets)))
    return lines


def _from_pretrained(info: ModelInfo, file_tensors: dict[str, TensorInfo], lines: list[ReportLine],
                     verdict: Any) -> list[ReportLine]:
    """The strict report with each line's `blocking` set by what from_pretrained reports, plus what
    only from_pretrained reports (a conversion that failed, a fused shape that does not fit)."""
    assert info.hf is not None
    loaded_as = {k: new for k, (new, _) in info.hf.renamed(file_tensors).items()}
    out: list[ReportLine] = []
    covered: set[str] = set()
    for line in lines:
        if line.problem == "missing":
            blocks = line.key in verdict.missing
            covered.add(line.key)
        elif line.problem == "unexpected":
            blocks = loaded_as.get(line.key, line.key) in verdict.unexpected
            covered.add(loaded_as.get(line.key, line.key))
        elif line.problem == "shape mismatch":
            blocks = line.key in verdict.mismatched
            covered.add(line.key)
        else:
            out.append(line)
            continue
        explanation = line.explanation
        if line.blocking and not blocks:
            explanation += ("; from_pretrained re-ties it" if line.explanation.startswith("tied") else
                            "; from_pretrained accepts it after its conversions" if line.problem == "shape mismatch"
                            else "; from_pretrained ignores it")
        out.append(replace(line, explanation=explanation, blocking=blocks, strict_blocking=line.blocking))
    for key in sorted(verdict.missing - covered):
        out.append(ReportLine(key, "missing", "from_pretrained finds no file key for it after its conversions",
                              "train/initialise it, or check the checkpoint's origin", strict_blocking=True))
    for key in sorted(verdict.unexpected - covered):
        out.append(ReportLine(key, "unexpected", "from_pretrained converts file keys into this name, which the "
                              "model does not have", "check the checkpoint's origin", strict_blocking=True))
    for key, (have, want) in sorted(verdict.mismatched.items()):
        if key not in covered:
            out.append(ReportLine(key, "shape mismatch", f"after from_pretrained's conversions the file gives "
                                  f"{list(have)}, model expects {list(want)}", "check the config against the file",
                                  strict_blocking=True))
    for key, why in sorted(verdict.errors.items()):
        out.append(ReportLine(key, "conversion failed", f"from_pretrained could not convert it: {why}",
                              "check the config against the file", strict_blocking=True))
    return out


def _prefix_fix(unexpected: list[str], missing: list[str]) -> tuple[str, str, int] | None:
    """The --strip-prefix or --add-prefix that turns the most unexpected keys into missing ones."""
    best: tuple[str, str, int] | None = None
    counts = {("--strip-prefix", p): n for p, n in prefix_matches(unexpected, missing).items()}
    counts |= {("--add-prefix", p): n for p, n in prefix_matches(missing, unexpected).items()}
    for (flag, p), n in counts.items():
        if best is None or n > best[2]:
            best = (flag, p, n)
    return best


def _hf_renames(info: ModelInfo, unexpected: list[str], missing: list[str]) -> dict[str, tuple[str, str]]:
    """Without transformers 5's conversion machinery: unexpected keys that become missing ones under
    transformers' documented renames or its base-model prefix handling: {file key: (model key, rule)}."""
    out: dict[str, tuple[str, str]] = {}
    want = set(missing)
    for key in unexpected:
        for src, dst in info.renames:
            try:
                new = re.sub(src, dst, key)
            except re.error:
                continue
            if new != key and new in want:
                out[key] = (new, f"{src!r} -> {dst!r}")
                break
        else:
            p = info.base_model_prefix
            if p and key.startswith(p + ".") and key[len(p) + 1:] in want:
                out[key] = (key[len(p) + 1:], f"base-model prefix {p + '.'!r} removed")
            elif p and f"{p}.{key}" in want:
                out[key] = (f"{p}.{key}", f"base-model prefix {p + '.'!r} added")
    return out

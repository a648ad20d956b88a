"""What loading a checkpoint into a model would report, each line explained with its fix: plain
load_state_dict(strict=True) for any model, and from_pretrained's verdict for a Hugging Face one."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..notes import Note, NoteKind
from ..state import Checkpoint, Entry, Kind, TensorInfo, prefix_matches
from ..vocab import Layout, ReportProblem
from .model import ModelInfo, ReportLine
from .reasons import failed_lines, fused_sources, lacking_text, tie_groups, untied_lines


def load_report(ck: Checkpoint, info: ModelInfo) -> list[ReportLine]:
    """The load report of `ck` against `info` (its notes: load_report_notes)."""
    return load_report_notes(ck, info)[0]


def load_report_notes(ck: Checkpoint, info: ModelInfo) -> tuple[list[ReportLine], list[Note]]:
    """The load report of `ck` against `info`, and the warnings of what could not run as asked. Lines
    are `blocking` when the model's own loader reports them (from_pretrained for a Hugging Face
    model); `fails_strict` says whether plain load_state_dict(strict=True) would."""
    if info.memo is not None:  # cache.py: stored for this checkpoint's keys, else computed live and stored
        lines, notes = info.memo.load_report(ck, info)
    else:
        lines, notes = keyed_report(ck, info)
    # What depends on more than the keys, shapes and dtypes the memo is keyed by: values and pickled kinds.
    file_tensors = {e.name: e.tensor for e in _state(ck) if e.tensor is not None}
    return lines + untied_lines(ck, info, file_tensors), _outside_notes(ck) + notes


def keyed_report(ck: Checkpoint, info: ModelInfo) -> tuple[list[ReportLine], list[Note]]:
    """The part of the load report that the checkpoint's keys, shapes and dtypes decide (cache.py
    stores it under them)."""
    notes: list[Note] = []
    model = _state(ck)
    file_tensors = {e.name: e.tensor for e in model if e.tensor is not None}
    file_values = {e.name for e in model if e.tensor is None}
    lines, tied = _strict_lines(ck, info, file_tensors, file_values, notes)
    if info.hf is None or ck.is_pickled_module:  # torch.load gives a pickled module back whole
        return lines, notes
    try:
        verdict = info.hf.verdict({k: (tuple(t.shape), t.dtype) for k, t in file_tensors.items()})
    except Exception as exc:  # noqa: BLE001 - transformers internals may refuse; keep the strict verdict
        notes.append(Note(NoteKind.LOAD_REPORT, f"from_pretrained's loading step could not run on meta tensors "
                          f"({type(exc).__name__}: {exc}); the report shows load_state_dict(strict=True)"))
        return lines, notes
    return _from_pretrained(info, file_tensors, lines, verdict, tied), notes


def _state(ck: Checkpoint) -> list[Entry]:
    """The model-state entries load_state_dict is handed (a pickled module's state_dict())."""
    return [e for e in ck.entries if e.group == "" and not ck.outside_state_dict(e)]


def _outside_notes(ck: Checkpoint) -> list[Note]:
    """What a pickled module holds beside its state_dict(): named, and why no report line counts it."""
    outside = [e for e in ck.entries if e.group == "" and ck.outside_state_dict(e)]
    if not outside:
        return []
    shown = ", ".join(f"{e.name} ({e.kind})" for e in outside[:4]) + (f" and {len(outside) - 4} more" if len(outside) > 4 else "")
    return [Note(NoteKind.CLASSIFICATION, f"{shown}: held by the pickled module, left out of its state_dict(); "
                 "load_state_dict never sees them and torch.load returns the module with them")]


class Why(StrEnum):
    """Why a key is in the strict report: the outcome, decided before any wording (_EXPLAIN)."""

    SHAPE = "shape"  # args: file shape, model shape
    DTYPE = "dtype"  # args: file dtype, model dtype
    QUANTIZED = "quantized"  # args: the scheme, model dtype
    TIED = "tied"  # args: the key holding the same Parameter, present in the file
    BATCH_COUNTER = "batch counter"
    UNDER_PREFIX = "under another prefix"  # args: flag, prefix
    ABSENT = "absent"  # args: what the model has there (a kind, or "entry")
    STALE_BUFFER = "stale non-persistent buffer"
    PREFIX_MATCH = "matches after a prefix fix"  # args: flag, prefix
    NOT_IN_MODEL = "not in the model"


@dataclass(frozen=True)
class Outcome:
    """One finding of the strict comparison, as data: which key, what is wrong and why."""

    key: str
    problem: ReportProblem
    why: Why
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Text:
    explanation: str  # str.format templates over Outcome.args
    fix: str | None
    blocking: bool = True
    strict_blocking: bool | None = None


_EXPLAIN: dict[Why, _Text] = {
    Why.SHAPE: _Text("file has {0}, model expects {1}",
                     "check --model-arg values (e.g. num_classes, vocab size) or drop the key"),
    Why.DTYPE: _Text("file has {0}, model has {1}; load_state_dict copies with a cast", None, blocking=False),
    Why.QUANTIZED: _Text("stored quantized ({0}) for a {1} parameter, as expected: the quantization method's "
                         "loader (from_pretrained with the quantization_config) reads the packed parts; no cast",
                         None, blocking=False),
    Why.TIED: _Text("tied to {0} in this model (one Parameter); the file stores it once under that name, which "
                    "fills both", "load with strict=False, or tie after loading"),
    Why.BATCH_COUNTER: _Text("BatchNorm batch counter: files from older PyTorch or hand-built state dicts lack it; "
                             "it only matters for momentum=None", "load with strict=False (the counter starts at 0)"),
    Why.UNDER_PREFIX: _Text("present in the file under another prefix ({1!r})", "{0} {1}"),
    Why.ABSENT: _Text("the model has this {0}; the file does not", "train/initialise it, or load with strict=False"),
    Why.STALE_BUFFER: _Text("a non-persistent buffer in this model, present in the file (written by an older "
                            "version of the code); the model rebuilds it itself",
                            "safe to drop: load with strict=False or remove the key"),
    Why.PREFIX_MATCH: _Text("matches a model key after {0} {1}", "{0} {1}"),
    Why.NOT_IN_MODEL: _Text("the file has this key; the model has no such parameter or buffer",
                            "remove it, or load with strict=False"),
}


def explain(o: Outcome) -> ReportLine:
    """The report line for an outcome: its wording and fix from _EXPLAIN."""
    text = _EXPLAIN[o.why]
    return ReportLine(o.key, o.problem, text.explanation.format(*o.args),
                      text.fix.format(*o.args) if text.fix is not None else None,
                      blocking=text.blocking, strict_blocking=text.strict_blocking)


def _strict_lines(ck: Checkpoint, info: ModelInfo, file_tensors: dict[str, TensorInfo],
                  file_values: set[str], notes: list[Note]) -> tuple[list[ReportLine], set[str]]:
    """The load_state_dict(strict=True) report, and the missing keys a tie explains (from_pretrained
    re-ties them)."""
    shape_dtype = _shape_dtype_outcomes(info, file_tensors)
    mismatched = {o.key for o in shape_dtype if o.why is Why.SHAPE}
    missing, unexpected = _key_sets(ck, info, file_tensors, file_values, mismatched, notes)
    converted = _conversions(info, unexpected, missing)
    fix = _prefix_fix(unexpected, missing)
    state = set(info.state_keys)
    outcomes = ([_missing(key, info, file_tensors, unexpected, fix) for key in missing]
                + [_unexpected(key, info, state, fix) for key in unexpected])
    lines = [explain(o) for o in shape_dtype] + converted + [explain(o) for o in outcomes]
    return lines, {o.key for o in outcomes if o.why is Why.TIED}


def _shape_dtype_outcomes(info: ModelInfo, file_tensors: dict[str, TensorInfo]) -> list[Outcome]:
    """Shape mismatches, then dtype differences grouped (one outcome per (file, model) dtype pair)."""
    out: list[Outcome] = []
    casts: dict[tuple[Why, str, str], list[str]] = {}
    for name, t in file_tensors.items():
        slot = info.slots.get(name)
        if slot is None or slot.kind == Kind.BUFFER_NP or name not in info.state_keys:
            continue
        if tuple(t.shape) != slot.shape:
            out.append(Outcome(name, ReportProblem.SHAPE_MISMATCH, Why.SHAPE,
                               (str(list(t.shape)), str(list(slot.shape)))))
        elif t.layout == Layout.QUANTIZED:  # a quantized weight meets a float layer: the quantizer's business
            casts.setdefault((Why.QUANTIZED, t.quant.scheme if t.quant else t.dtype, slot.dtype), []).append(name)
        elif t.dtype != slot.dtype:
            casts.setdefault((Why.DTYPE, t.dtype, slot.dtype), []).append(name)
    for (why, have, want), names in casts.items():  # uniform differences in one line, not one per tensor
        key = names[0] if len(names) == 1 else f"({len(names)} tensors)"
        problem = ReportProblem.QUANTIZED if why is Why.QUANTIZED else ReportProblem.DTYPE_DIFFERS
        out.append(Outcome(key, problem, why, (have, want)))
    return out


def _key_sets(ck: Checkpoint, info: ModelInfo, file_tensors: dict[str, TensorInfo], file_values: set[str],
              mismatched: set[str], notes: list[Note]) -> tuple[list[str], list[str]]:
    """(missing, unexpected) by torch's own logic (hooks such as BatchNorm's num_batches_tracked
    handling) run on meta tensors; a plain comparison of key sets where the model refuses them."""
    import torch

    fake: dict[str, Any] = {}
    for name, t in file_tensors.items():
        shape, dtype = (info.slots[name].shape, info.slots[name].dtype) if name in mismatched else (t.shape, t.dtype)
        try:
            fake[name] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        except (AttributeError, RuntimeError, TypeError):
            fake[name] = torch.empty(0, device="meta")
    for name in file_values:
        fake[name] = None
    if ck.torch_metadata is not None:
        fake_sd: Any = type("SD", (dict,), {})(fake)
        fake_sd._metadata = ck.torch_metadata_dicts()  # a copy: a module's hook may change what it is given
    else:
        fake_sd = fake
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = info.model.load_state_dict(fake_sd, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)
    except Exception as exc:  # noqa: BLE001 - custom hooks may refuse meta tensors; fall back to key sets
        notes.append(Note(NoteKind.LOAD_REPORT, f"the model's load_state_dict could not run on meta tensors "
                          f"({type(exc).__name__}); the report compares key sets"))
        return ([k for k in info.state_keys if k not in file_tensors and k not in file_values],
                [k for k in list(file_tensors) + sorted(file_values) if k not in info.state_keys])


def _missing(key: str, info: ModelInfo, file_tensors: dict[str, TensorInfo], unexpected: list[str],
             fix: tuple[str, str, int] | None) -> Outcome:
    slot = info.slots.get(key)
    held = next((k for k in tie_groups(info).get(key, ()) if k in file_tensors), None)
    if slot is not None and held is not None:  # from_pretrained ties whichever member the file holds
        return Outcome(key, ReportProblem.MISSING, Why.TIED, (held,))
    if key.endswith("num_batches_tracked"):
        return Outcome(key, ReportProblem.MISSING, Why.BATCH_COUNTER)
    if fix and (fix[0] == "--strip-prefix" and any(u == fix[1] + key for u in unexpected)
                or fix[0] == "--add-prefix" and key.startswith(fix[1]) and key[len(fix[1]):] in unexpected):
        return Outcome(key, ReportProblem.MISSING, Why.UNDER_PREFIX, (fix[0], fix[1]))
    return Outcome(key, ReportProblem.MISSING, Why.ABSENT, (str(slot.kind) if slot else "entry",))


def _unexpected(key: str, info: ModelInfo, state: set[str], fix: tuple[str, str, int] | None) -> Outcome:
    slot = info.slots.get(key)
    if slot is not None and slot.kind == Kind.BUFFER_NP:
        return Outcome(key, ReportProblem.UNEXPECTED, Why.STALE_BUFFER)
    if fix and (fix[0] == "--strip-prefix" and key[len(fix[1]):] in state and key.startswith(fix[1])
                or fix[0] == "--add-prefix" and fix[1] + key in state):
        return Outcome(key, ReportProblem.UNEXPECTED, Why.PREFIX_MATCH, (fix[0], fix[1]))
    return Outcome(key, ReportProblem.UNEXPECTED, Why.NOT_IN_MODEL)


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
        lines.append(ReportLine(head, ReportProblem.RENAMED, f"differ{'s' if len(pairs) == 1 else ''} only by a rename "
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
        lines.append(ReportLine(head, ReportProblem.CONVERTED, f"from_pretrained builds {'it' if len(targets) == 1 else 'each'} "
                                f"from {len(keys)} file key{'s' if len(keys) > 1 else ''} ({shown})",
                                "load with from_pretrained (it converts the keys)", blocking=False,
                                strict_blocking=True, keys=tuple(targets)))
    return lines


def _from_pretrained(info: ModelInfo, file_tensors: dict[str, TensorInfo], lines: list[ReportLine],
                     verdict: Any, tied: set[str]) -> list[ReportLine]:
    """The strict report with each line's `blocking` set by what from_pretrained reports, plus what
    only from_pretrained reports (a conversion that failed, a fused shape that does not fit).
    `tied`: the missing keys a tie explains."""
    assert info.hf is not None
    loaded_as = {k: new for k, (new, _) in info.hf.renamed(file_tensors).items()}
    out: list[ReportLine] = []
    covered: set[str] = set()
    for line in lines:
        if line.problem is ReportProblem.MISSING:
            blocks = line.key in verdict.missing
            covered.add(line.key)
        elif line.problem is ReportProblem.UNEXPECTED:
            blocks = loaded_as.get(line.key, line.key) in verdict.unexpected
            covered.add(loaded_as.get(line.key, line.key))
        elif line.problem is ReportProblem.SHAPE_MISMATCH:
            blocks = line.key in verdict.mismatched
            covered.add(line.key)
        else:
            out.append(line)
            continue
        explanation = line.explanation
        if line.blocking and not blocks:
            explanation += ("; from_pretrained re-ties it" if line.key in tied else
                            "; from_pretrained accepts it after its conversions"
                            if line.problem is ReportProblem.SHAPE_MISMATCH
                            else "; from_pretrained ignores it")
        out.append(replace(line, explanation=explanation, blocking=blocks, strict_blocking=line.blocking))
    for key in sorted(verdict.missing - covered - set(verdict.errors)):  # a failed build says why below
        out.append(ReportLine(key, ReportProblem.MISSING, "from_pretrained finds no file key for it after its conversions",
                              "train/initialise it, or check the checkpoint's origin", strict_blocking=True))
    for key in sorted(verdict.unexpected - covered):
        out.append(ReportLine(key, ReportProblem.UNEXPECTED, "from_pretrained converts file keys into this name, which the "
                              "model does not have", "check the checkpoint's origin", strict_blocking=True))
    fused = fused_sources(info, file_tensors) if set(verdict.mismatched) - covered else {}
    for key, (have, want) in sorted(verdict.mismatched.items()):
        if key not in covered:
            present, lacking = fused.get(key, ([], []))
            why = f"; {lacking_text(lacking, len(present) + len(lacking))}" if lacking else ""
            out.append(ReportLine(key, ReportProblem.SHAPE_MISMATCH, f"after from_pretrained's conversions the file gives "
                                  f"{list(have)}, model expects {list(want)}{why}", "check the config against the file",
                                  strict_blocking=True))
    if verdict.errors:
        out += failed_lines(info, file_tensors, verdict.errors)
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

"""`statecli check`: CI rules over saved checkpoints, from flags and/or TOML config, with findings
per rule per file."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadInput, ExitCode, StatecliError, UnsafeContent, user_regex
from ..notes import Note
from ..state import SCHEMA_VERSION, Checkpoint, Entry, Kind
from ..storage import unique_storage_bytes
from ..units import fmt_bytes
from ..vocab import CheckRule, Layout
from .check_config import Rules, device_allowed, load_config, rules_for, rules_from_mapping
from .gguf_view import key_names
from .quantized import bits_rule, quantization_rule, storage_dtypes_rule


@dataclass(frozen=True)
class Finding:
    path: str
    rule: CheckRule
    passed: bool
    reason: str


@dataclass(frozen=True)
class CheckResult:
    findings: tuple[Finding, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()  # (path, message): unreadable inputs
    unsafe: tuple[tuple[str, str], ...] = ()  # (path, message): code that loading would run, or a hidden payload
    rules_from: tuple[tuple[str, str], ...] = ()  # (path, where its rules came from): no gate passes silently
    accepted: tuple[Any, ...] = ()  # analyses.baseline.Accepted: failures a --baseline accepts (they pass)
    notes: tuple[Note, ...] = ()  # e.g. a baseline acceptance that expired

    columns = ("path", "rule", "passed", "reason")

    def named(self, path: str, label: str) -> CheckResult:
        """This result with `path` (stdin's spooled copy) named `label` (<stdin>) wherever it appears."""
        def pairs(xs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
            return tuple((label if p == path else p, m.replace(path, label)) for p, m in xs)
        return replace(self, findings=tuple(replace(f, path=label) if f.path == path else f for f in self.findings),
                       errors=pairs(self.errors), unsafe=pairs(self.unsafe), rules_from=pairs(self.rules_from))

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings) and not self.errors and not self.unsafe

    @property
    def exit_code(self) -> ExitCode:
        if self.unsafe:
            return ExitCode.UNSAFE
        if self.errors:
            return ExitCode.BAD_INPUT
        return ExitCode.OK if self.passed else ExitCode.DIFFERENT

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "passed": self.passed,
                "rules_from": {p: src for p, src in self.rules_from},
                "findings": [{"path": f.path, "rule": f.rule, "passed": f.passed, "reason": f.reason}
                             for f in self.findings],
                "errors": [{"path": p, "error": m} for p, m in self.errors],
                "unsafe": [{"path": p, "finding": m} for p, m in self.unsafe]} | (
                    {"accepted": [a.to_dict() for a in self.accepted]} if self.accepted else {})

    def rows(self) -> list[dict[str, Any]]:
        return ([{"path": f.path, "rule": f.rule, "passed": f.passed, "reason": f.reason} for f in self.findings]
                + [{"path": p, "rule": CheckRule.READ, "passed": False, "reason": m} for p, m in self.errors]
                + [{"path": p, "rule": CheckRule.UNSAFE, "passed": False, "reason": m} for p, m in self.unsafe])

    def files(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Every checked file with its rows, in the order first met: a file passes when all of them do."""
        by_path: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows():
            by_path.setdefault(r["path"], []).append(r)
        return list(by_path.items())

    # Markdown (`check -f md`, the Action's job summary): a PR-comment table, one line per file.
    md_columns = ("result", "file", "reasons")

    @property
    def md_title(self) -> str:
        failed = sum(1 for _, rows in self.files() if not all(r["passed"] for r in rows))
        return f"statecli check: {MARK[self.passed]} " + (f"{failed} of {len(self.files())} file(s) failed" if failed
                                                          else f"{len(self.files())} file(s) passed")

    def md_rows(self) -> list[dict[str, Any]]:
        out = []
        for path, rows in self.files():
            bad = [r for r in rows if not r["passed"]]
            reasons = "; ".join(f"{r['rule']}: {r['reason']}" for r in bad) if bad else f"{len(rows)} rule(s) passed"
            out.append({"result": MARK[not bad], "file": path, "reasons": reasons})
        return out

    @property
    def md_footer(self) -> str:
        rows = self.rows()
        files = self.files()
        failed_files = sum(1 for _, rs in files if not all(r["passed"] for r in rs))
        failed = sum(1 for r in rows if not r["passed"])
        return (f"**Totals:** {len(files)} file(s): {len(files) - failed_files} {MARK[True]}, {failed_files} {MARK[False]}; "
                f"{len(rows)} check(s): {len(rows) - failed} passed, {failed} failed")


MARK = {True: "✅", False: "❌"}  # pass / fail, in Markdown meant for a pull request or job summary


@dataclass(frozen=True)
class _Subject:
    """One checkpoint as every rule sees it: its path, its pickle scan and its classified entries."""

    path: str
    rules: Rules
    scan: Any  # analyses.scan.ScanResult
    ck: Checkpoint

    @property
    def tensors(self) -> list[Entry]:
        return [e for e in self.ck.entries if e.tensor is not None]


def _safe_pickle(s: _Subject) -> list[Finding]:
    from .scan import SAFE

    bad = sorted({g.name for g in s.scan.globals if g.verdict != SAFE})
    return [Finding(s.path, CheckRule.SAFE_PICKLE, not bad, _safe_reason(s.scan) if not bad else
                    f"{s.scan.verdict}: " + ", ".join(bad[:6]))]


def _safe_reason(r: Any) -> str:
    """Why a clean scan (analyses.scan.ScanResult) passes safe-pickle: a file the scan found no pickle in
    (safetensors, GGUF, ONNX - whose op domains are no pickle globals -, a .pt2 without pickles) says so."""
    if r.pickles == 0:
        return f"no pickle in this {r.format or 'file'} file"
    return "only weights-only allowlisted globals"


def _dtypes(s: _Subject) -> list[Finding]:
    rules, wrong = s.rules, []
    for e in s.tensors:
        assert e.tensor is not None
        allowed = rules.param_dtypes if e.kind == Kind.PARAMETER else rules.buffer_dtypes if e.kind.is_buffer else ()
        if allowed and e.tensor.dtype not in allowed:
            wrong.append(f"{e.name} ({e.kind}, {e.tensor.dtype})")
    inferred = any(e.evidence.inferred for e in s.tensors)
    hint = " (kinds inferred from names and dtypes; --model classifies exactly)" if inferred and wrong else ""
    return [Finding(s.path, CheckRule.DTYPES, not wrong, "all dtypes allowed" if not wrong else
                    f"{len(wrong)} tensor(s) outside the allowed dtypes: " + "; ".join(wrong[:5]) + hint)]


def _max_size(s: _Subject) -> list[Finding]:
    from ..io.source import file_size, isfile

    budget = s.rules.max_size
    assert budget is not None
    on_disk = sum(file_size(f) for f in s.ck.files if isfile(f))
    return [Finding(s.path, CheckRule.MAX_SIZE, on_disk <= budget, f"{on_disk:,} bytes on disk, budget {budget:,}")]


def _devices(s: _Subject) -> list[Finding]:
    allowed = s.rules.devices
    wrong = sorted({e.tensor.device for e in s.tensors
                    if e.tensor is not None and not device_allowed(e.tensor.device, allowed)})
    target = next((d for d in allowed if d != "meta"), "cpu")
    return [Finding(s.path, CheckRule.DEVICES, not wrong, f"saved on {', '.join(wrong)}; run: statecli move {s.path} "
                    f"--device {target} -o OUT" if wrong else f"every tensor on {', '.join(allowed)}")]


def _required_keys(s: _Subject) -> list[Finding]:
    names = key_names(s.ck)
    out = []
    for pat in s.rules.required_keys:
        rx = _rx(pat)
        ok = any(rx.search(n) for n in names)
        out.append(Finding(s.path, CheckRule.REQUIRED_KEYS, ok, f"{pat!r} {'present' if ok else 'matches no key'}"))
    return out


def _forbidden_keys(s: _Subject) -> list[Finding]:
    names = key_names(s.ck)
    out = []
    for pat in s.rules.forbidden_keys:
        rx = _rx(pat)
        hits = [n for n in names if rx.search(n)]
        out.append(Finding(s.path, CheckRule.FORBIDDEN_KEYS, not hits,
                           f"{pat!r} " + (f"matches {', '.join(hits[:5])}" if hits else "matches nothing")))
    return out


def _no_optimizer_state(s: _Subject) -> list[Finding]:
    opt = [e for e in s.ck.entries if e.kind == Kind.OPTIMIZER]
    groups = sorted({e.group for e in opt})
    size = fmt_bytes(unique_storage_bytes(opt)[1])
    if not opt:
        reason = "no optimizer state"
    elif "" in groups:  # the whole file is an optimizer state dict: there is nothing to strip it to
        reason = f"the file is an optimizer state dict ({size}), not model weights"
    else:
        reason = f"optimizer state in {', '.join(groups)} ({size}); run: statecli strip {s.path} --optimizer -o OUT"
    return [Finding(s.path, CheckRule.NO_OPTIMIZER_STATE, not opt, reason)]


def _matches_model(s: _Subject) -> list[Finding]:
    from ..classify import with_model
    from ..modeldef import build_model, load_report, parse_model_args

    assert s.rules.matches_model is not None
    info = build_model(s.rules.matches_model, parse_model_args(list(s.rules.model_args), None))
    lines = [x for x in load_report(with_model(s.ck, info), info) if x.blocking]
    return [Finding(s.path, CheckRule.MATCHES_MODEL, not lines, f"loads strictly into {info.class_name}" if not lines
                    else "; ".join(f"{x.key}: {x.problem}" for x in lines[:5]))]


def _format(s: _Subject) -> list[Finding]:
    ck, wanted = s.ck, s.rules.format
    ok = ck.format.family in wanted or ck.format in wanted
    return [Finding(s.path, CheckRule.FORMAT, ok, f"{ck.format}" + ("" if ok else f"; required: {', '.join(wanted)}"))]


# Every rule after the pickle scan, in report order: (is it enabled, what it finds). NaN and Inf share
# one pass over the values (_value_rules).
_RULE_TABLE: tuple[tuple[Callable[[Rules], bool], Callable[[_Subject], list[Finding]]], ...] = (
    (lambda r: r.safe_pickle, _safe_pickle),
    (lambda r: r.no_nan or r.no_inf, lambda s: _value_rules(s.ck, s.rules)),
    (lambda r: bool(r.param_dtypes or r.buffer_dtypes), _dtypes),
    (lambda r: r.max_size is not None, _max_size),
    (lambda r: bool(r.devices), _devices),
    (lambda r: bool(r.required_keys), _required_keys),
    (lambda r: bool(r.forbidden_keys), _forbidden_keys),
    (lambda r: r.no_optimizer_state, _no_optimizer_state),
    (lambda r: bool(r.matches_model), _matches_model),
    (lambda r: bool(r.format), _format),
    (lambda r: r.bits_per_weight_max is not None, lambda s: [Finding(s.path, CheckRule.BITS_PER_WEIGHT, *bits_rule(
        s.ck, s.rules.bits_per_weight_max or 0.0))]),
    (lambda r: bool(r.quantization), lambda s: [Finding(s.path, CheckRule.QUANTIZATION, *quantization_rule(
        s.ck, s.rules.quantization))]),
    (lambda r: bool(r.storage_dtypes), lambda s: [Finding(s.path, CheckRule.STORAGE_DTYPES, *storage_dtypes_rule(
        s.ck, s.rules.storage_dtypes))]),
)


def evaluate(path: str, rules: Rules, model: Any = None) -> list[Finding]:
    """Every enabled rule for one checkpoint; raises StatecliError for an unreadable input."""
    from ..open import open_checkpoint
    from .scan import DANGEROUS, scan

    sr = scan(path, verify_crc=False)  # the safe-pickle rule needs the pickles, not every tensor byte
    if sr.exit_code == ExitCode.UNSAFE:  # a security finding is the result whatever the rules, as in every command
        what = ", ".join(sorted({g.name for g in sr.globals if g.verdict == DANGEROUS})[:6]) or (
            sr.unsafe_content[0] if sr.unsafe_content else str(sr.verdict))
        raise UnsafeContent(path, f"{sr.verdict}: {what}", "do not load this file (statecli scan shows everything)")
    if sr.error:
        raise BadInput(path, sr.error)
    subject = _Subject(path, rules, sr, open_checkpoint(path, model=model).checkpoint)
    return [f for enabled, run in _RULE_TABLE if enabled(rules) for f in run(subject)]


def _rx(pat: str) -> re.Pattern[str]:
    return user_regex(pat, "key pattern")


def _value_rules(ck: Checkpoint, rules: Rules) -> list[Finding]:
    from ..formats.registry import values_of
    from ..units import is_floating
    from .stats_pass import non_finite

    floats = [e for e in ck.entries if e.tensor is not None and e.tensor.device != "meta" and (
        is_floating(e.tensor.dtype) and e.tensor.layout == Layout.STRIDED or e.tensor.quant is not None)]  # dequantized
    read = {id(e) for e in floats}  # `e not in floats` compared entries field by field: quadratic
    skipped = sum(1 for e in ck.entries if e.tensor is not None and id(e) not in read and not e.tensor.dtype.startswith(
        ("int", "uint", "bool")))
    with values_of(ck) as reader:
        counts = non_finite(reader, [e.tensor for e in floats if e.tensor is not None], [e.name for e in floats])
    found = {e.name: {"nan": c[0], "inf": c[1]} for e, c in zip(floats, counts)}
    out = []
    for rule, on, attr, word in ((CheckRule.NO_NAN, rules.no_nan, "nan", "NaN"), (CheckRule.NO_INF, rules.no_inf, "inf",
                                                                                 "Inf")):
        if not on:
            continue
        bad = [(n, c[attr]) for n, c in found.items() if c[attr]]
        note = f" ({skipped} complex/sparse/quantized/meta tensor(s) not read)" if skipped else ""
        out.append(Finding(ck.path, rule, not bad, f"no {word} in {len(floats)} floating tensor(s){note}" if not bad
                           else "; ".join(f"{n}: {c} {word}" for n, c in bad[:5])))
    return out


def check(paths: list[str], flags: dict[str, Any], config: str | None = None, model: Any = None) -> CheckResult:
    """Rules from the config (--config, else the nearest pyproject.toml), then `flags` (the command
    line, which wins), then the config's per-path overrides; every enabled rule on every checkpoint,
    classified as every command classifies (`model`: an open.ModelChoice; --hf-config, a config.json beside)."""
    rules_from_mapping(Rules(), flags, "command line")  # bad flags fail before any file is read
    configs: dict[str, tuple[dict[str, Any], str | None]] = {}
    findings: list[Finding] = []
    errors: list[tuple[str, str]] = []
    unsafe: list[tuple[str, str]] = []
    sources: list[tuple[str, str]] = []
    from .scan_folder import Role, TargetKind, plan

    for target in plan(paths):  # what `scan` reads: a folder checkpoint whole, a config.json naming code
        path = target.path
        # Without --config, each file follows the pyproject.toml of its own project (the nearest above it).
        start = "." if config else os.path.dirname(os.path.abspath(path))
        if start not in configs:
            configs[start] = load_config(config, start)
        table, source = configs[start]
        base = rules_from_mapping(Rules(), table, source or "config") if table else Rules()
        rules = rules_for(path, rules_from_mapping(base, flags, "command line"), table, source)
        if target.kind is TargetKind.CONFIG or target.role is Role.BESIDE:
            found = _companion(target, rules)
            findings += found
            sources += [(path, _from(source))] if found else []
            continue
        sources.append((path, _from(source)))
        try:
            findings += evaluate(path, rules, model)
        except UnsafeContent as exc:
            unsafe.append((path, exc.message))
        except StatecliError as exc:
            errors.append((path, exc.message))
    return CheckResult(tuple(findings), tuple(errors), tuple(unsafe), tuple(sources))


def _from(source: str | None) -> str:
    return f"{source} + command line" if source else "command line (no [tool.statecli.check] found)"


def _companion(target: Any, rules: Rules) -> list[Finding]:
    """The safe-pickle rule on what `scan` lists beside a folder checkpoint's loaded files (a pickled
    `training_args.bin`, an `extra_state.pt`...) and on a config.json whose auto_map names code: a
    failure of the rule (exit 1), never a read error, since the checkpoint's loader does not read them."""
    from .scan import NEEDS_TRUST, SAFE, scan
    from .scan_folder import TargetKind

    if not rules.safe_pickle:
        return []
    if target.kind is TargetKind.CONFIG:
        return [Finding(target.path, CheckRule.SAFE_PICKLE, False, f"{NEEDS_TRUST}: {target.code.describe()}")]
    r = scan(target.path, verify_crc=False)
    if target.optional and r.errors and not (r.globals or r.calls or r.unsafe_content):
        return []  # a companion without a checkpoint suffix whose bytes are no checkpoint: no loader reads it
    bad = sorted({g.name for g in r.globals if g.verdict != SAFE})
    where = "beside the checkpoint (its loader does not read it)"
    if not bad and not r.unsafe_content and not r.errors:
        return [Finding(target.path, CheckRule.SAFE_PICKLE, True, f"{_safe_reason(r)}; {where}")]
    what = ", ".join(bad[:6]) or (r.unsafe_content or r.errors)[0]
    return [Finding(target.path, CheckRule.SAFE_PICKLE, False, f"{r.verdict}: {what}; {where}")]

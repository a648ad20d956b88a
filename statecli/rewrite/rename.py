"""Key renames of the model state (`--strip-prefix`, `--rename OLD=NEW`, `--add-prefix`): one design
for every rewrite command and for `statecli rename`.

Order: every --strip-prefix is removed wherever it leads a key (repeatedly, so `module._orig_mod.`
goes with both flags given), then each --rename applies as a Python regular expression (`re.sub`
over the whole key, every match; NEW may use \\1 or \\g<name>), then --add-prefix is prepended.
Only the model state is renamed: optimizer state, EMA copies, epochs and other containers keep
their keys (the optimizer refers to parameters by index, not by name). Filters (--pattern, --keep)
match the names as stored; renames apply to what is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError, user_regex
from ..notes import Note
from ..state import Role
from ..vocab import ChangeKind
from .plan import Change, Plan, entry_key, rewrite_note


@dataclass(frozen=True, kw_only=True)
class Renames:
    """How model-state keys change on the way out."""

    strip_prefixes: tuple[str, ...] = ()
    renames: tuple[str, ...] = ()  # "OLD=NEW": OLD a regular expression, NEW its replacement
    add_prefix: str | None = None

    def __bool__(self) -> bool:
        return bool(self.strip_prefixes or self.renames or self.add_prefix)


def rename_function(spec: Renames) -> Callable[[str], str]:
    """The key -> new key function of `spec`; refuses malformed --rename values."""
    rules: list[tuple[re.Pattern[str], str]] = []
    for text in spec.renames:
        old, sep, new = text.partition("=")
        if not sep or not old:
            raise UsageError(None, f"--rename {text!r} is not OLD=NEW", "e.g. --rename '^encoder\\.=backbone.'")
        rules.append((user_regex(old, f"--rename {text!r}:"), new))
    prefixes = tuple(p for p in spec.strip_prefixes if p)

    def rename(key: str) -> str:
        changed = True
        while changed and prefixes:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        for pattern, new in rules:
            try:
                key = pattern.sub(new, key)
            except (re.error, IndexError) as exc:
                raise UsageError(None, f"--rename replacement {new!r} is invalid: {exc}") from exc
        return (spec.add_prefix or "") + key

    return rename


def alias_name(plan: Plan, key: str) -> str:
    """The output name of a model-state key that is no entry (a tie the input leaves out): renamed
    as an entry of that name would be."""
    return plan.renames.get(key) or (rename_function(plan.rename_spec)(key) if plan.rename_spec else key)


def model_names(plan: Plan) -> list[str]:
    """Model-state keys as written (relative to the container), dropped entries left out."""
    group = plan.model_from or ""
    cut = len(group) + 1 if group else 0
    return [e.name[cut:] if group and e.name.startswith(group + ".") else e.name
            for e in plan.ck.entries if e.group == group
            and (entry_key(e) not in plan.drop or (plan.model_from and e.group == plan.model_from))]


def with_renames(plan: Plan, spec: Renames | None) -> Plan:
    """`plan` renaming the model state as `spec` says; a UsageError when two keys would collide."""
    if not spec:
        return plan
    rename = rename_function(spec)
    names = model_names(plan)
    mapping = {n: rename(plan.renames.get(n, n)) for n in names}  # after an EMA's unwrap (plan.py)
    taken: dict[str, str] = {}
    for old, new in mapping.items():
        if not new:
            raise UsageError(plan.ck.path, f"renaming {old!r} leaves an empty key", "adjust --strip-prefix/--rename")
        if new in taken:
            raise UsageError(plan.ck.path, f"{taken[new]!r} and {old!r} would both be renamed to {new!r}",
                             "adjust --strip-prefix/--rename/--add-prefix, or drop one first with strip --pattern")
        taken[new] = old
    changed = {old: new for old, new in mapping.items() if old != new}
    notes = plan.notes
    if not changed:
        notes += (rewrite_note("no model key matched the renames: the keys are written as they are"),)
    notes += _other_copies(plan, rename)
    changes = tuple(Change(old, ChangeKind.RENAMED, new) for old, new in changed.items())
    return dataclasses.replace(plan, renames=changed, rename_spec=spec, changes=plan.changes + changes, notes=notes)


def _other_copies(plan: Plan, rename: Any) -> tuple[Note, ...]:
    """Other containers holding weights the same renames would change (an EMA copy of a DataParallel
    model keeps its `module.` keys): renames apply to the model state only, so say where else to look."""
    out = []
    for c in plan.ck.containers:
        if not c.name or c.role not in (Role.EMA, Role.OTHER_STATE):
            continue
        names = [e.name for e in plan.ck.entries if e.group == c.name and e.tensor is not None]
        inner = [n[len(c.name) + 1:] if n.startswith(c.name + ".") else n for n in names]
        hits = sum(1 for n in inner if rename(n) != n)
        if hits:
            out.append(rewrite_note(f"{c.name!r} ({c.role}) has {hits} key(s) these renames would change too; renames "
                                    f"apply to the model state only: run again with --key {c.name} to rename them"))
    return tuple(out)


def renamed_key(plan: Plan, key: Any, names: set[str]) -> Any:
    """The output key of one key of the model-state mapping (`names`: model_names(plan)). A nested
    mapping keeps its structure, so every name under it must change the same way (a prefix rename)."""
    k = str(key)
    if k in names:
        return plan.renames.get(k, key)
    heads: set[str | None] = set()
    for name in _names_under(plan, k):
        new = plan.renames.get(name, name)
        tail = name[len(k):]
        if not new.endswith(tail):
            heads.add(None)
            break
        heads.add(new[:len(new) - len(tail)])
    if len(heads) > 1 or None in heads:
        raise UsageError(plan.ck.path, f"the renames change names inside the nested mapping {k!r} in different ways",
                         "rename only whole prefixes of nested state, or convert to a flat state dict first")
    head = heads.pop() if heads else k
    return key if head == k else head


def _names_under(plan: Plan, k: str) -> list[str]:
    return [n for n in model_names(plan) if n.startswith(k + ".")]


def renamed_metadata(plan: Plan, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict's `_metadata` (module prefix -> version) under the new module names, as
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present does for its prefix."""
    if plan.unwrap:  # an EMA wrapper's own modules: its root ('') goes, 'module.x' becomes 'x'
        cut = plan.unwrap[:-1]
        meta = {k[len(cut) + 1:] if k.startswith(plan.unwrap) else "": v for k, v in meta.items()
                if k == cut or k.startswith(plan.unwrap)}
    if plan.rename_spec is None:
        return dict(meta)
    rename = rename_function(plan.rename_spec)
    out: dict[str, Any] = {}
    moved: dict[str, Any] = {}
    for k, v in meta.items():
        new = rename(f"{k}." if k else "")
        new = new[:-1] if new.endswith(".") else new
        (out if new == k else moved)[new] = v
    out.update(moved)  # the renamed module wins over a wrapper's own entry (DataParallel's root)
    return out

"""The documented Python API: open, inspect, size, diff, scan and check, each returning the frozen result
whose `to_dict()` is exactly what the matching command prints with `--format json` (the CLI is this
API's face). Nothing here prints or exits; errors are `statecli.errors.StatecliError` subclasses that
carry the command's exit code. Stable under semantic versioning from 1.0 (see docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analyses.check import CheckResult
    from .analyses.diff import DiffResult
    from .analyses.inspect import InspectResult
    from .analyses.scan import ScanReport
    from .analyses.size import SizeResult
    from .state import Checkpoint

__all__ = ["open", "inspect", "size", "diff", "scan", "check"]


def open(path: str, key: str | None = None, model: str | None = None, *,  # noqa: A001 - the API's name for it
         model_args: Sequence[str] = (), model_kwargs: str | None = None, hf_config: str | None = None,
         strip_prefix: Sequence[str] = ()) -> Checkpoint:
    """Read and classify one checkpoint without running any of its code.

    `path` is a file, a sharded `*.index.json`, a folder (Hugging Face, sharded or DCP) or a URL
    (s3://, gs://, hf://, https://...). `key` picks the container holding the model state ("." for the
    file's root). `model` ('pkg.module:Name' or 'file.py:Name'; importing it runs that code) classifies
    parameters and buffers exactly; `model_args` are its 'key=value' arguments.

    >>> ck = statecli.open("model.safetensors")
    >>> [e.name for e in ck.entries][:3]
    """
    from .open import ModelChoice, open_checkpoint

    choice = None
    if model or hf_config:
        choice = ModelChoice(model, tuple(model_args), model_kwargs, hf_config)
    return open_checkpoint(path, key, choice, strip_prefix=tuple(strip_prefix)).checkpoint


def inspect(path: str, *, kinds: Iterable[str] = (), pattern: str | None = None, stats: bool = False,
            tree: bool = False, key: str | None = None, model: str | None = None, model_args: Sequence[str] = (),
            model_kwargs: str | None = None, hf_config: str | None = None, auto_hf_config: bool = True,
            strip_prefix: Sequence[str] = (), add_prefix: str | None = None) -> InspectResult:
    """`statecli inspect`: every entry with its kind, evidence, dtype, shape, size and device.

    `kinds` keeps only those kinds ("parameter", "buffer", "optimizer state", ...), `pattern` only names
    matching a regex; `stats` reads values for min/max/mean/std and NaN/Inf counts. With `model` (or a
    config.json beside the file when transformers is installed and `auto_hf_config`) the entries are
    classified against the definition and `load_report` says what load_state_dict(strict=True) would.
    """
    from .analyses.inspect import inspect as run
    from .open import ModelChoice, open_checkpoint

    choice = ModelChoice(model, tuple(model_args), model_kwargs, hf_config, auto_hf=auto_hf_config)
    opened = open_checkpoint(path, key, choice, strip_prefix=tuple(strip_prefix), add_prefix=add_prefix,
                             classify_by_model=False)  # inspect classifies and reports against the model itself
    return run(opened.checkpoint, tuple(kinds), pattern, stats=stats, model=opened.model,
               model_explicit=bool(model or hf_config), tree=tree)


def size(path: str, *, depth: int = 1, top: int = 10, key: str | None = None,
         strip_prefix: Sequence[str] = ()) -> SizeResult:
    """`statecli size`: bytes and parameter counts by module (`depth` name components), kind, dtype and
    device, shared storage counted once, and the `top` largest tensors. Reads metadata only."""
    from .analyses.size import size_of
    from .load import load_checkpoint

    return size_of(load_checkpoint(path, key=key, strip_prefix=tuple(strip_prefix)), depth, top)


def diff(a: str, b: str, *, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False, values: bool = True,
         everything: bool = False, only_changed: bool = False, ignore_dtype: bool = False, by_module: bool = False,
         depth: int = 0, sort: str = "order", key: str | None = None, key_a: str | None = None,
         key_b: str | None = None, strip_prefix: Sequence[str] = (), add_prefix_a: str | None = None,
         add_prefix_b: str | None = None, strict_sharing: bool = False) -> DiffResult:
    """`statecli diff`: keys added/removed/changed, shape/dtype/device/kind changes and (with `values`)
    value differences within `rtol`/`atol`, tensor by tensor. `result.exit_code` is 0 equal, 1 different."""
    from .analyses.diff import diff as run
    from .load import load_checkpoint

    strip = tuple(strip_prefix)
    ck_a = load_checkpoint(a, key=key_a or key, strip_prefix=strip, add_prefix=add_prefix_a)
    ck_b = load_checkpoint(b, key=key_b or key, strip_prefix=strip, add_prefix=add_prefix_b)
    return run(ck_a, ck_b, rtol=rtol, atol=atol, equal_nan=equal_nan, values=values, everything=everything,
               only_changed=only_changed, ignore_dtype=ignore_dtype, depth=depth, by_module=by_module, sort=sort,
               strict_sharing=strict_sharing)


def scan(*paths: str, strict: bool = False) -> ScanReport:
    """`statecli scan`: every global and call each pickle makes, without running it, and a verdict per
    file (safe, needs-trust, malformed, dangerous). A folder stands for every checkpoint below it."""
    from .analyses.scan import scan_paths

    return scan_paths(list(paths), strict=strict)


def check(*paths: str, rules: Mapping[str, Any] | None = None, config: str | None = None) -> CheckResult:
    """`statecli check`: CI rules per checkpoint. `rules` uses the command's option names
    ({"no-nan": True, "devices": "cpu", "max-size": "2GB", ...}) and wins over `config` (a TOML file),
    or else over [tool.statecli.check] in the nearest pyproject.toml above each file."""
    from .analyses.check import check as run

    return run(list(paths), dict(rules or {}), config)


def _repr_html_(result: Any) -> str:
    """A notebook's view of a result: the page `--format html` writes, or for results without one
    (scan, check) their rows as one table. Attached to the result classes here, in the API layer,
    because the analyses may not import the renderer (import-linter layers)."""
    from io import StringIO

    from .errors import UsageError
    from .render import html

    buf = StringIO()
    try:
        html.write_html(result, buf)
        return buf.getvalue()
    except UsageError:  # a result without an HTML page: its rows, which every result has
        rows = result.rows()
        heads = list(dict.fromkeys(k for r in rows for k in r))
        return html.table(heads, [[r.get(h, "") for h in heads] for r in rows])


def _repr(result: Any) -> str:
    """A result's repr: its class and the outcome line `-q` prints (path, format, counts, bytes), never
    the entries it holds (a small CNN's full dataclass repr ran to 25 kB)."""
    from .render.outcome import outcome

    code = getattr(result, "exit_code", None)
    return f"<{type(result).__name__} {outcome(result)}" + (f"; exit code {int(code)}>" if code is not None else ">")


def _checkpoint_repr(ck: Checkpoint) -> str:
    """`statecli.open(...)`'s repr: path, format, counts and the bytes of the distinct storages (a tied
    weight once, as `statecli.size` counts them)."""
    from .storage import unique_storage_bytes
    from .units import fmt_bytes, plural

    tensors = sum(1 for e in ck.entries if e.tensor is not None)
    return (f"<Checkpoint {ck.path} ({ck.format}): {plural(len(ck.entries), 'entry', 'entries')}, "
            f"{plural(tensors, 'tensor')}, {fmt_bytes(unique_storage_bytes(ck.entries)[1])}>")


def _attach_views() -> None:
    from .analyses.check import CheckResult
    from .analyses.diff import DiffResult
    from .analyses.inspect import InspectResult
    from .analyses.scan import ScanReport
    from .analyses.show import ShowResult
    from .analyses.size import SizeResult
    from .state import Checkpoint

    for cls in (InspectResult, SizeResult, DiffResult, ScanReport, CheckResult, ShowResult):
        setattr(cls, "_repr_html_", _repr_html_)  # noqa: B010 - a class attribute the classes do not declare
        setattr(cls, "__repr__", _repr)  # noqa: B010 - a short repr in place of the dataclass's field dump
    setattr(Checkpoint, "__repr__", _checkpoint_repr)  # noqa: B010


_attach_views()

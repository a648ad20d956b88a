"""run(plan, target): resolve the destination, write the plan atomically, verify it by re-reading, and
return what changed. The plan is never modified; write-time facts go to a log local to one run."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import IO

from ..errors import UsageError
from ..io import atomic
from ..load import load_checkpoint
from ..state import Checkpoint, Kind
from ..vocab import ChangeKind, Format, Layout, WriteFormat
from . import encode, hf, upload
from .destination import STDOUT, Destination, OutputLayout, output_format, parse_size, planned_bytes, resolve
from .folder import copy_folder
from .plan import Change, Plan, entry_key, rewrite_note
from .quantized import as_stored
from .result import RewriteResult, WriteLog
from .spec import Target
from .tree import model_items, rebuild, with_restored_ties
from .verify import verify_file, verify_index

__all__ = ["run", "output_format", "parse_size"]
_NO_DEVICE = (WriteFormat.SAFETENSORS, WriteFormat.DCP)  # formats that record no device: a move cannot change anything there

Progress = Callable[[int, int], None]


def run(plan: Plan, target: Target, progress: Progress | None = None, stdout: IO[bytes] | None = None) -> RewriteResult:
    """Write the plan atomically and verify the result by re-reading it. `progress(done, total)` is
    called as tensor bytes are written; `stdout` receives the output for `-o -` (after verifying)."""
    ck = plan.ck
    dest = resolve(plan, target)
    if not plan.dequantize:
        plan = as_stored(plan)  # quantized weights go out as their stored parts, byte for byte
    plan = _without_unsupported(plan, target.drop_unsupported, dest.fmt is WriteFormat.SAFETENSORS or plan.dequantize)
    hf_folder = dest.layout is OutputLayout.HF and dest.hf_source
    if hf_folder or dest.fmt is WriteFormat.SAFETENSORS and dest.layout is not OutputLayout.DCP:
        plan = hf.without_tied(plan, dest.hf_source if dest.layout is OutputLayout.HF else None)
    plan = _device_report(plan, dest.fmt)
    log = WriteLog(progress=progress)
    if dest.fmt is WriteFormat.PT and dest.layout in (OutputLayout.FILE, OutputLayout.STDOUT):
        plan = with_restored_ties(plan, log)
    need = planned_bytes(plan, dest.fmt)
    after = None
    if not target.dry_run:
        if dest.layout is OutputLayout.STDOUT:
            if stdout is None:
                raise UsageError(None, "-o - needs a binary stdout")
            after = _write_stdout(plan, dest, target.strict, log, need, stdout)
        elif upload.is_url(dest.path):
            assert dest.path is not None
            after = upload.write_remote(dest.path, dest.layout is not OutputLayout.FILE, need, lambda local: _write(
                plan, dataclasses.replace(dest, path=local), target, log, need))
        else:
            assert dest.path is not None
            _sweep(dest.path, log)
            atomic.check_space(dest.path, need)
            after = _write(plan, dest, target, log, need)
    elif dest.fmt is WriteFormat.SAFETENSORS:
        model_items(plan, log)  # a dry run says what a flat tensor file would leave out, as the real run does
    notes = plan.notes + tuple(n for n in log.notes if n not in plan.notes)
    return RewriteResult(plan=plan, output=dest.path, out_format=dest.fmt, before=ck, after=after,
                         dry_run=target.dry_run, changes=plan.changes + tuple(log.changes), notes=notes,
                         planned_bytes=need)


def _write(plan: Plan, dest: Destination, target: Target, log: WriteLog, need: int) -> Checkpoint:
    assert dest.path is not None
    if dest.layout is OutputLayout.DCP:
        return _write_dcp(plan, dest.path, target.strict, log, need)
    if dest.layout is OutputLayout.HF:
        return _write_hf(plan, dest, target.strict, log, need)
    if dest.layout is OutputLayout.SHARDS:
        return _write_sharded(plan, dest.path, dest.fmt, dest.shard, target.in_place, target.strict, log, need)
    after = _write_single(plan, dest.path, dest.fmt, target.strict, log, need)
    if target.in_place:
        hf.config_in_place(plan, log)
    return after


def _sweep(path: str, log: WriteLog) -> None:
    folder = os.path.dirname(os.path.abspath(path.rstrip("/") or path)) or "."
    removed = atomic.remove_stale(folder)
    if removed:
        log.note(f"removed {len(removed)} temp file(s) an interrupted statecli run left in {folder}: "
                 + ", ".join(removed[:3]) + (", ..." if len(removed) > 3 else ""))


def _device_report(plan: Plan, fmt: WriteFormat) -> Plan:
    """A .pt output records the device: the move's changes and notes stand. safetensors and DCP
    record none, so nothing moves: say that instead of claiming a move."""
    if plan.location is None:
        return plan
    if fmt not in _NO_DEVICE:
        return dataclasses.replace(plan, notes=plan.notes + plan.device_notes, device_notes=())
    where = "load_file(..., device=...)" if fmt is WriteFormat.SAFETENSORS else "the state dict passed to dcp.load"
    note = rewrite_note(f"{fmt} records no device, so nothing was moved: its tensors load where the loader puts "
                        f"them ({where}); write a .pt to record a device")
    return dataclasses.replace(plan, location=None, changes=tuple(c for c in plan.changes if c.what is not ChangeKind.MOVED),
                               notes=plan.notes + (note,), device_notes=())


def _without_unsupported(plan: Plan, drop_unsupported: bool, dequantizes: bool = False) -> Plan:
    """The plan with sparse/quantized/meta tensors dropped, or a refusal naming them. With `dequantizes`
    (a safetensors output), a quantized tensor with a planned cast is written dequantized instead."""
    ck = plan.ck
    # A torch.export custom object (TorchBind, opaque) is a constant no statecli writer can write.
    unsupported = [e for e in ck.entries if entry_key(e) not in plan.drop and (
        (e.tensor is None and e.kind is Kind.CONSTANT)
        or (e.tensor is not None and (e.tensor.layout != Layout.STRIDED or e.tensor.device == "meta")
            and not (dequantizes and e.tensor.quant is not None and entry_key(e) in plan.cast)))]  # dequantized
    if not unsupported:
        return plan
    if not drop_unsupported:
        names = [e.name for e in unsupported]
        quantized = any(e.tensor is not None and e.tensor.quant is not None for e in unsupported)
        raise UsageError(ck.path, f"{len(names)} entries have a layout statecli cannot rewrite "
                         f"({', '.join(names[:4])}{'...' if len(names) > 4 else ''})",
                         ("convert --dequantize writes the quantized ones as plain tensors; " if quantized else "")
                         + "add --drop-unsupported to leave them out")
    return dataclasses.replace(plan, drop=plan.drop | {entry_key(e) for e in unsupported},
                               changes=plan.changes + tuple(Change(e.name, ChangeKind.REMOVED, "unsupported layout")
                                                            for e in unsupported))


def _refuse_if_strict(plan: Plan, strict: bool, log: WriteLog) -> None:
    if strict and any(c.overflow or c.underflow for c in log.changes):
        raise UsageError(plan.ck.path, "--strict: some values overflow or underflow the target dtype "
                                       "(listed above); nothing was written")


def _write_file(plan: Plan, path: str, fmt: WriteFormat, log: WriteLog, flat: bool = False) -> None:
    with atomic.open_output(path) as f:
        if fmt is WriteFormat.SAFETENSORS:
            encode.write_safetensors(plan, f, model_items(plan, log), log)
        elif flat:  # a Hugging Face pytorch_model.bin: the state dict alone
            items = model_items(plan, log)
            encode.write_pt(plan, f, lambda st: dict((name, st.leaf(e)) for name, e in items), log)
        else:
            encode.write_pt(plan, f, lambda storages: rebuild(plan, storages.leaf, log), log)


def _write_single(plan: Plan, target: str, fmt: WriteFormat, strict: bool, log: WriteLog, need: int) -> Checkpoint:
    with atomic.atomic_file(target, need=need) as tmp:
        _write_file(plan, tmp, fmt, log, flat=plan.ck.format is Format.PT2)
        _refuse_if_strict(plan, strict, log)
        return verify_file(plan, tmp, fmt, target)


def _write_stdout(plan: Plan, dest: Destination, strict: bool, log: WriteLog, need: int,
                  stdout: IO[bytes]) -> Checkpoint:
    """Written and verified in a temp file first (the zip writer seeks; a reader must never get an
    unverified or partial stream), then copied to stdout."""
    with tempfile.TemporaryDirectory(prefix=".statecli-stdout-") as folder:
        path = os.path.join(folder, "out." + dest.fmt)
        atomic.check_space(path, need)
        after = _write_single(plan, path, dest.fmt, strict, log, need)
        with open(path, "rb") as f:
            shutil.copyfileobj(f, stdout, 1 << 20)
        stdout.flush()
    return dataclasses.replace(after, path=STDOUT, files=(STDOUT,))


def _write_sharded(plan: Plan, target: str, fmt: WriteFormat, shard: int | None, in_place: bool, strict: bool,
                   log: WriteLog, need: int) -> Checkpoint:
    with atomic.atomic_dir(target, replace=in_place, need=need) as tmp:
        index, total = encode.write_shards(plan, tmp, fmt, shard, log)
        _refuse_if_strict(plan, strict, log)
        verify_index(plan, index)
        if plan.ck.format.is_sharded and not in_place:  # a folder in, a folder out: the rest comes too
            source = os.path.dirname(os.path.abspath(plan.ck.path))
            copy_folder(source, tmp, _own_files(plan, source), log)
    size = f"of at most {shard} bytes" if shard else "as the input's shards"
    log.note(f"wrote {total} shard(s) {size} and {os.path.basename(index)}")
    return load_checkpoint(target)


def _write_hf(plan: Plan, dest: Destination, strict: bool, log: WriteLog, need: int) -> Checkpoint:
    """A Hugging Face folder: shards plus index when the input was sharded or --max-shard-size asks,
    else model.safetensors (pytorch_model.bin with --to pt); config.json and companions copied."""
    assert dest.path is not None and dest.hf_source is not None
    sharded = dest.shard is not None or plan.ck.format.is_sharded
    casts = set(plan.cast.values())
    with atomic.atomic_dir(dest.path, need=need) as tmp:
        if sharded:
            index, total = encode.write_shards(plan, tmp, dest.fmt, dest.shard, log)
            _refuse_if_strict(plan, strict, log)
            verify_index(plan, index)
            log.note(f"wrote a Hugging Face folder: {total} shard(s) and {os.path.basename(index)}")
        else:
            name = "model.safetensors" if dest.fmt is WriteFormat.SAFETENSORS else "pytorch_model.bin"
            _write_file(plan, os.path.join(tmp, name), dest.fmt, log, flat=True)
            _refuse_if_strict(plan, strict, log)
            verify_file(plan, os.path.join(tmp, name), WriteFormat.SAFETENSORS, os.path.join(dest.path, name))
            log.note(f"wrote a Hugging Face folder: {name}")
        hf.copy_companions(dest.hf_source, tmp, _own_files(plan, dest.hf_source),
                           casts.pop() if len(casts) == 1 else None, log, plan.dequantize)
    return load_checkpoint(dest.path)


def _own_files(plan: Plan, folder: str) -> set[str]:
    """Names of the input's own files directly in `folder`: the weights the output holds anew."""
    return {os.path.basename(f) for f in plan.ck.files if os.path.dirname(os.path.abspath(f)) == os.path.abspath(folder)}


def _write_dcp(plan: Plan, target: str, strict: bool, log: WriteLog, need: int) -> Checkpoint:
    from ..formats import dcp
    from ..formats.registry import values_of

    with atomic.atomic_dir(target, need=need) as tmp, values_of(plan.ck, plan.hf_layout) as reader:
        # The whole checkpoint, wrappers included: DCP holds nested state (optimizer, counters) too.
        sd = rebuild(plan, encode.dcp_tensor(plan, reader, log), log)
        _refuse_if_strict(plan, strict, log)
        dcp.write(tmp, sd)
    log.note("DCP output written with torch.distributed.checkpoint's FileSystemWriter")
    return load_checkpoint(target)

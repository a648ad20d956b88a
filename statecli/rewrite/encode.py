"""Driving the formats' encoders from a plan: .pt archives, safetensors files, Hugging Face shards and
DCP state; tensor bytes stream from the mapped input, casts and their losses go to the write log."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..errors import UsageError
from ..formats import safetensors, sharded, torchzip
from ..formats.safetensors import ALIASES_KEY, TO_SAFETENSORS, WriteItem
from ..formats.torchzip import OutStorage, OutTensor
from ..io.atomic import open_output
from ..io.limits import load_json
from ..state import Entry, Format, TensorInfo, contiguous_stride
from ..units import itemsize
from ..vocab import ChangeKind, WriteFormat
from . import stream
from .plan import Change, Plan, entry_key
from .quantized import torchao_metadata
from .rename import alias_name
from .result import WriteLog
from .stream import Losses
from .tree import model_items, out_dtype, out_nbytes


@dataclass
class _Cast:
    """A cast while its bytes stream: becomes a Change (with the final counts) once written."""

    name: str
    detail: str
    losses: Losses
    what: ChangeKind = ChangeKind.CAST

    @classmethod
    def of(cls, name: str, t: TensorInfo, to: str, stored: str | None = None) -> _Cast:
        """A quantized weight is dequantized, not cast: say so, with its scheme ("int4 -> float16"
        would read as a cast of packed integers)."""
        if t.quant is not None:
            return cls(name, f"{t.quant.scheme} -> {to}", Losses(), ChangeKind.DEQUANTIZED)
        return cls(name, f"{stored or t.dtype} -> {to}", Losses())

    def change(self) -> Change:
        return Change(self.name, self.what, self.detail, overflow=self.losses.overflow, underflow=self.losses.underflow)


@dataclass(frozen=True)
class _Source:
    info: TensorInfo  # the first tensor seen on this storage
    cast: bool
    view: bool  # the output storage holds only this view, made contiguous (not its whole input storage)


class PtStorages:
    """The output storages of one .pt file, numbered from 0 (each shard afresh); `leaf(entry)` gives
    the tensor record that points at its storage."""

    def __init__(self, plan: Plan, compact: bool) -> None:
        self.plan = plan
        self.compact = compact  # write views of larger storages as their own storages (shards)
        self._by_key: dict[Any, OutStorage] = {}
        self.sources: dict[OutStorage, _Source] = {}
        self.tied = _recorded_ties(plan)

    def leaf(self, e: Entry) -> OutTensor:
        t = e.tensor
        assert t is not None
        st = self._storage(e, t)
        if self.sources[st].view:
            return OutTensor(st, 0, t.shape, contiguous_stride(t.shape), t.requires_grad)
        stride = t.stride if t.stride is not None else contiguous_stride(t.shape)
        return OutTensor(st, t.storage_offset, t.shape, stride, t.requires_grad)

    def _storage(self, e: Entry, t: TensorInfo) -> OutStorage:
        plan = self.plan
        whole = t.storage_nbytes is None or (t.is_contiguous and t.storage_offset == 0 and t.nbytes == t.storage_nbytes)
        cast = entry_key(e) in plan.cast
        # a shard holds the view alone, not the whole storage it came from; so does a dequantized weight
        # (its output storage is its logical values, not the packed blocks it was read from)
        own = (self.compact and not whole) or (cast and t.quant is not None)
        key: Any = t.storage_id or ("anon", id(e))
        key = self.tied.get(key, key)
        if own:
            key = (*key, t.storage_offset, t.shape, t.stride)
        st = self._by_key.get(key)
        if st is None:
            sdtype = t.storage_dtype or t.dtype
            nbytes = t.storage_size
            numel = t.numel if own else nbytes // itemsize(sdtype)
            dtype = plan.cast.get(entry_key(e), t.dtype if own else sdtype)
            st = OutStorage(str(len(self._by_key)), dtype, plan.location or t.device, numel)
            self._by_key[key] = st
            self.sources[st] = _Source(t, cast, own)
        elif self.sources[st].cast != cast:
            raise UsageError(plan.ck.path, f"{e.name!r} shares its storage with a tensor that is treated differently",
                             "cast or keep both (adjust --keep/--only)")
        return st


def _recorded_ties(plan: Plan) -> dict[tuple[Any, Any], tuple[Any, Any]]:
    """Storage keys of tensors a safetensors input stores as copies of a tied tensor (recorded in
    ALIASES_KEY by statecli) -> the storage key of the tensor they copy: a .pt output ties them again."""
    text = plan.ck.metadata.get(ALIASES_KEY) if plan.ck.format is Format.SAFETENSORS else None
    try:
        recorded = load_json(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    by_name = {e.name: e for e in plan.ck.entries if e.group == "" and e.tensor is not None}
    out = {}
    for alias, target in recorded.items():
        a, b = by_name.get(str(alias)), by_name.get(str(target))
        if a is None or b is None or a.tensor is None or b.tensor is None:
            continue
        same = (a.tensor.dtype, a.tensor.shape, out_dtype(plan, a)) == (b.tensor.dtype, b.tensor.shape, out_dtype(plan, b))
        ids = a.tensor.storage_id, b.tensor.storage_id
        if same and (entry_key(a) in plan.drop) == (entry_key(b) in plan.drop) and ids[0] and ids[1]:
            out[ids[0]] = ids[1]
    return out


def write_pt(plan: Plan, f: IO[bytes], tree_of: Callable[[PtStorages], Any], log: WriteLog,
             compact: bool = False) -> None:
    """A .pt archive of the tree `tree_of(storages)` builds (its tensor leaves from `storages.leaf`)."""
    from ..formats.registry import values_of

    storages = PtStorages(plan, compact)
    tree = tree_of(storages)
    log.expect(sum(st.nbytes for st in storages.sources))
    casts: list[_Cast] = []
    with values_of(plan.ck, plan.hf_layout) as reader:
        def data(st: OutStorage) -> Iterable[memoryview]:
            src = storages.sources[st]
            losses = None
            if src.cast:
                users = [e for e in plan.ck.entries if e.tensor is not None and e.tensor.storage_key ==
                         src.info.storage_key and e.tensor.source == src.info.source]
                if src.view:
                    users = [e for e in users if e.tensor is src.info]
                views = [e.tensor for e in users if e.tensor is not None]
                cast = _Cast.of(", ".join(e.name for e in users), src.info, st.dtype,
                                src.info.storage_dtype or src.info.dtype)
                casts.append(cast)
                losses = cast.losses
                if not src.view and not any(_covers(t) for t in views):
                    # Storage no view covers (a slice of a bigger tensor): count losses on the views
                    # themselves, not on elements nothing refers to.
                    losses = None
                    stream.count_view_losses(cast.losses, views, reader, st.dtype)
            return _Counted(log, stream.chunks(reader, src.info, st.dtype if src.cast else None, losses, not src.view,
                                               checksum=True))

        torchzip.write(f, tree, list(storages.sources), data)
    log.changes.extend(c.change() for c in casts)


class _Counted:
    """Chunks passed through with the write log advanced after each; a source's crc32() (computed
    while the chunks were produced, see pipe.LocalChunks) stays visible to the zip writer."""

    def __init__(self, log: WriteLog, chunks: Iterable[memoryview]) -> None:
        self.log, self.chunks = log, chunks
        known = getattr(chunks, "crc32", None)
        if known is not None:
            self.crc32: Callable[[], int] = known

    def __iter__(self) -> Iterator[memoryview]:
        for chunk in self.chunks:
            yield chunk
            self.log.advance(chunk.nbytes)


def _covers(t: TensorInfo) -> bool:
    return t.is_contiguous and t.storage_offset == 0 and (t.storage_nbytes is None or t.nbytes == t.storage_nbytes)


def write_safetensors(plan: Plan, f: IO[bytes], items: list[tuple[str, Entry]], log: WriteLog) -> None:
    """A safetensors file of `items`. Tied keys are left out before this is called (hf.without_tied,
    save_model's convention) and recorded in metadata as save_model does, {left-out key: stored key};
    with plan.duplicate_tied every key is stored, tied ones as copies, so that
    load_state_dict(load_file(...), strict=True) works, and the ties go in ALIASES_KEY so statecli
    re-ties them when it writes a .pt again."""
    from ..formats.registry import values_of

    for _, e in items:
        if out_dtype(plan, e) not in TO_SAFETENSORS:
            raise UsageError(plan.ck.path, f"{e.name!r} has dtype {out_dtype(plan, e)}, which safetensors cannot hold")
    aliases = tied_aliases(plan, items) if plan.duplicate_tied else {}
    meta = _metadata(plan, {name for name, _ in items})
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
        log.note(f"--duplicate-tied: {len(aliases)} tied tensor(s) stored as copies, so "
                 "load_state_dict(load_file(...), strict=True) works: "
                 + ", ".join(f"{a} = {b}" for a, b in list(aliases.items())[:3]))
    log.expect(sum(out_nbytes(plan, e) for _, e in items))
    casts: list[_Cast] = []
    with values_of(plan.ck, plan.hf_layout) as reader:
        def item(name: str, e: Entry) -> WriteItem:
            t = e.tensor
            assert t is not None
            to = plan.cast.get(entry_key(e))
            losses = None
            if to and name not in aliases:  # a copy's losses are its original's: count them once
                casts.append(_Cast.of(name, t, to))
                losses = casts[-1].losses
            return WriteItem(name, out_dtype(plan, e), t.shape, out_nbytes(plan, e),
                             lambda: _Counted(log, stream.chunks(reader, t, to, losses, False)))

        safetensors.write(f, [item(name, e) for name, e in items], meta)
    log.changes.extend(c.change() for c in casts)


def _metadata(plan: Plan, names: set[str]) -> dict[str, str]:
    """The output's __metadata__: the input's (a safetensors input), its alias records brought up to
    date, and {left-out key: key that stores it} for the ties the plan leaves out, as save_model
    records them (user entries of the same name are never overwritten, as save_model does)."""
    meta: dict[str, str] = {}
    carried: dict[str, str] = {}
    if plan.ck.format is Format.SAFETENSORS:
        stored = {e.name for e in plan.ck.entries if e.group == "" and e.tensor is not None}
        old = safetensors.recorded_aliases(plan.ck.metadata, stored)
        meta = torchao_metadata(plan, {k: v for k, v in plan.ck.metadata.items() if k != ALIASES_KEY and k not in old})
        # A tie the input already left out stays left out: record it under the names written now.
        carried = {alias_name(plan, a): alias_name(plan, t) for a, t in old.items()}
    meta.setdefault("format", "pt")
    for alias, kept in {**carried, **plan.tied}.items():
        if kept in names and alias not in names:
            meta.setdefault(alias, kept)
    return meta


def tied_aliases(plan: Plan, items: list[tuple[str, Entry]], keep: str = "first") -> dict[str, str]:
    """Output name -> the output name that stores its tensor, for names tied together (same storage,
    view and output dtype). `keep`: "first" in write order, or "sorted" (safetensors.torch.save_model's
    choice: the first name in sorted order)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, e in items:
        t = e.tensor
        assert t is not None
        if t.storage_key is not None:
            key = (t.source, t.storage_key, t.storage_offset, t.shape, t.stride, out_dtype(plan, e))
            groups.setdefault(key, []).append(name)
    out: dict[str, str] = {}
    for names in groups.values():
        kept = min(names) if keep == "sorted" else names[0]
        out |= {n: kept for n in names if n != kept}
    return out


def write_shards(plan: Plan, folder: str, fmt: WriteFormat, max_bytes: int | None, log: WriteLog) -> tuple[str, int]:
    """Hugging Face shards plus their index in `folder`; (index path, shards). Shards of at most
    `max_bytes`, or (None) the input's own shards: each output shard holds what its input shard held."""
    items = model_items(plan, log)
    sizes = [out_nbytes(plan, e) for _, e in items]
    log.expect(sum(sizes))
    if max_bytes is not None:
        groups = sharded.split_by_size(sizes, max_bytes)
    else:
        by_source: dict[Any, list[int]] = {}
        for j, (_, e) in enumerate(items):
            by_source.setdefault(e.tensor.source if e.tensor else None, []).append(j)
        groups = list(by_source.values()) or [[]]
    stem, ext, index = sharded.shard_layout(fmt is WriteFormat.SAFETENSORS)
    wmap: dict[str, str] = {}
    total_size = 0
    for i, idxs in enumerate(groups, 1):
        fname = sharded.shard_name(stem, ext, i, len(groups))
        group = [items[j] for j in idxs]
        with open_output(os.path.join(folder, fname)) as f:
            if fmt is WriteFormat.SAFETENSORS:
                write_safetensors(plan, f, group, log)  # every key of the weight map is in its shard
            else:
                write_pt(plan, f, _flat_tree(group), log, compact=True)
        for name, e in group:
            wmap[name] = fname
            total_size += out_nbytes(plan, e)
    path = os.path.join(folder, index)
    sharded.write_index(path, wmap, total_size)
    return path, len(groups)


def _flat_tree(items: list[tuple[str, Entry]]) -> Callable[[PtStorages], Any]:
    return lambda storages: OrderedDict((name, storages.leaf(e)) for name, e in items)


def dcp_tensor(plan: Plan, reader: Any, log: WriteLog) -> Callable[[Entry], Any]:
    """Tensor leaves for a DCP state dict: views of the mapped input (DCP's writer streams them out),
    cast eagerly where the plan says so, with the losses counted."""
    import torch

    def tensor(e: Entry) -> Any:
        assert e.tensor is not None
        t = reader.tensor(e.tensor)
        to = plan.cast.get(entry_key(e))
        if to is None:
            return t
        target = getattr(torch, to)
        out = t.to(target)
        losses = Losses()
        if t.numel() and t.dtype.is_floating_point:
            stream.count_losses(losses, t.reshape(-1), out.reshape(-1), target)
        log.changes.append(_Cast(e.name, f"{e.tensor.dtype} -> {to}", losses).change())
        return out

    tensor.real_torch_values = True  # type: ignore[attr-defined]  # tree.rebuild: DCP's writer wants torch's objects
    return tensor

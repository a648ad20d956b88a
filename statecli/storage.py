"""The one home of storage accounting: which tensors share a storage, and the bytes of distinct
storages. A storage's bytes are its largest view's `storage_size`, counted once wherever it is seen;
a meta tensor has no bytes and a tensor without a storage key owns its bytes alone."""

from __future__ import annotations

from collections.abc import Iterable

from .state import Entry, StorageId, TensorInfo


def storage_bytes(t: TensorInfo) -> int:
    """The bytes `t` stands for when no other tensor shares its storage: none on the meta device,
    its own bytes without a storage key, else its storage's size."""
    if t.device == "meta":
        return 0
    return t.nbytes if t.storage_key is None else t.storage_size


def shared_storages(entries: Iterable[Entry]) -> dict[StorageId, list[Entry]]:
    """The storages two or more of `entries` use, each with its users in order, in order of each
    storage's first user (a tied embedding, a view of a larger tensor). Meta tensors share nothing."""
    first: dict[StorageId, Entry] = {}
    shared: dict[StorageId, list[Entry]] = {}
    for e in entries:
        t = e.tensor
        if t is not None and t.device != "meta":
            k = t.storage_id
            if k is None:
                continue
            prev = first.setdefault(k, e)
            if prev is not e:
                shared.setdefault(k, [prev]).append(e)
    return {k: shared[k] for k in first if k in shared} if shared else {}


def unique_storage_bytes(entries: Iterable[Entry]) -> tuple[int, int]:
    """(bytes of all tensors as views, bytes of the distinct storages behind them)."""
    view_total = 0
    seen: dict[StorageId, int] = {}
    anonymous = 0
    for e in entries:
        t = e.tensor
        if t is None:
            continue
        nbytes = t.nbytes
        view_total += nbytes
        if t.device == "meta":
            continue  # a meta tensor saves no bytes
        key = t.storage_id
        if key is None:
            anonymous += nbytes
        else:
            size = t.storage_size
            if size > seen.get(key, 0):  # the largest view's storage size (a 0-byte one adds nothing)
                seen[key] = size
    return view_total, anonymous + sum(seen.values())


def storage_overlap(entries: Iterable[Entry]) -> tuple[int, int]:
    """(bytes saved by sharing: views beyond their storage's size, bytes of storage no view covers:
    a slice of a larger tensor saves the whole storage), summed storage by storage."""
    groups: dict[StorageId, list[int]] = {}  # storage -> [bytes of its views, its size]
    for e in entries:
        t = e.tensor
        if t is None or t.device == "meta":
            continue
        key = t.storage_id
        if key is None:
            continue
        size = t.storage_size
        g = groups.get(key)
        if g is None:
            groups[key] = [t.nbytes, size]
        else:
            g[0] += t.nbytes
            if size > g[1]:
                g[1] = size
    shared = outside = 0
    for v, s in groups.values():
        if v > s:
            shared += v - s
        else:
            outside += s - v
    return shared, outside

"""`scan` of a zip checkpoint: data.pkl, every shadowed duplicate, the bytes after the end record,
every member torch.load never reads (pickles, .npy, nested pickles) and, with verify_crc, every
tensor record's CRC. A zip with no data.pkl may be an .npz whose object arrays are pickles."""

from __future__ import annotations

from ..errors import NotACheckpoint, UnsafeContent
from ..io.limits import Inflation, read_zip_member
from ..pickle.pickles import Context, Findings, scan_nested, scan_stream
from ..state import Format
from .zipcheck import Archive, fold

MAX_PICKLE_SCAN = 1 << 30


def scan(target: str, acc: Findings, verify_crc: bool) -> Format:
    from . import npy

    try:
        arc = Archive(target)
    except NotACheckpoint:
        if npy.scan_zip(target, acc):
            return Format.NUMPY_NPZ
        raise
    try:
        _scan_archive(arc, acc, verify_crc)
        return Format.TORCHSCRIPT_ZIP if arc.torchscript else Format.TORCH_ZIP
    finally:
        arc.close()


def _scan_archive(arc: Archive, acc: Findings, verify_crc: bool) -> None:
    acc.problems += arc.problems
    ctx = Context(torchscript=arc.torchscript)
    if arc.torchscript:
        acc.code += sorted(n for n in arc.infos if fold(n).startswith(fold(arc.prefix) + "code/")
                           and fold(n).endswith(".py"))
    pkl = arc.lookup("data.pkl") or arc.prefix + "data.pkl"
    broken = _scan_data_pkl(arc, pkl, acc, ctx)
    scan_duplicates(arc, acc, ctx)
    scan_stream(arc.tail_bytes(), "after the zip end record", acc)
    unexpected = arc.unexpected(acc.storage_keys)
    if broken:  # a data.pkl cut short names only some storages: its records are unjudged, as the loader does
        unexpected = [n for n in unexpected if not n.startswith(arc.prefix + "data/")]
    acc.problems += [f"zip member {n!r} is never read by torch.load" for n in unexpected]
    side = set(arc.side_pickles())
    never_read = set(unexpected)  # a set: a list's `in` made 9,000 members cost 40M comparisons
    for name, info in arc.infos.items():
        if name == pkl or info.file_size > MAX_PICKLE_SCAN:
            continue
        try:
            _scan_member(arc, name, name in side, name in never_read, verify_crc, acc, ctx)
        except UnsafeContent as exc:  # this member is a compression bomb: the others are still scanned
            acc.problems.append(exc.problem)


def _scan_data_pkl(arc: Archive, pkl: str, acc: Findings, ctx: Context) -> bool:
    """data.pkl and any bytes after its STOP; True when it is cut short (a scan error)."""
    if pkl not in arc.infos:
        return False
    size = arc.infos[pkl].file_size
    if size > MAX_PICKLE_SCAN:
        acc.problems.append(f"{pkl} declares {size} bytes, over the {MAX_PICKLE_SCAN}-byte pickle cap")
    data = arc.member(pkl, MAX_PICKLE_SCAN)
    before = len(acc.errors)
    end = scan_stream(data, pkl, acc, ctx, max_pickles=1)
    broken = len(acc.errors) > before
    trailing_findings(data, end, pkl, acc, arc.torchscript)
    return broken


def scan_duplicates(arc: Archive, acc: Findings, ctx: Context) -> None:
    """The shadowed copies of a duplicated name (or a case variant of another): another reader's pick."""
    for info in arc.zf.infolist():
        shadowed_name = arc.folded.get(fold(info.filename)) != info.filename
        if (arc.infos.get(info.filename) is not info or shadowed_name) and info.file_size <= MAX_PICKLE_SCAN:
            try:
                shadowed = read_zip_member(arc.zf, info, f"duplicate zip member {info.filename!r}")
            except Inflation as exc:
                acc.problems.append(str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on broken members
                acc.problems.append(f"cannot read duplicate zip member {info.filename!r}: {exc}")
                continue
            scan_stream(shadowed, f"{info.filename} (duplicate)", acc, ctx)


def _scan_member(arc: Archive, name: str, side: bool, unexpected: bool, verify_crc: bool, acc: Findings,
                 ctx: Context) -> None:
    if side:
        scan_stream(arc.member(name), name, acc, ctx)
    elif unexpected or not name.startswith(arc.prefix):
        data = arc.member(name, any_method=True)
        if name.endswith(".npy"):
            from .npy import scan_bytes

            scan_bytes(data, name, acc)
        elif fold(name).endswith(".pkl") or data[:1] == b"\x80":
            scan_stream(data, name, acc, ctx)
        else:
            scan_nested(data, name, acc, ctx)
    elif verify_crc:
        before = len(arc.problems)
        arc.check_crc(name)
        acc.errors += [f"corrupt tensor data: {p}" for p in arc.problems[before:]]


def trailing_findings(data: bytes, end: int, where: str, acc: Findings, torchscript: bool = False) -> None:
    """Bytes after data.pkl's STOP: torch never reads them, other loaders may; scanned, and a finding."""
    if end >= len(data):
        return
    before = acc.pickles
    stop = scan_stream(data, f"{where} after STOP", acc, Context(torchscript=torchscript), start=end)
    extra = acc.pickles - before
    what = f" ({extra} more pickle(s))" if extra else ""
    acc.problems.append(f"{where}: {len(data) - end} byte(s) after the pickle's STOP{what}"
                        + (f", {len(data) - stop} of them not a pickle" if stop < len(data) else ""))

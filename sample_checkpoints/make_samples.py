"""Generate the sample checkpoints in this folder (deterministic; run with the CWD anywhere).

    python sample_checkpoints/make_samples.py

Every file is written next to this script. Files and what each demonstrates:

cnn.pt
    ``SmallCNN().state_dict()`` (models.py) after a train-mode forward pass and two Adam steps:
    conv/linear weights, BatchNorm running stats and int64 0-d ``num_batches_tracked`` (= 3).
cnn.safetensors
    The same state dict via ``safetensors.torch.save_file`` with metadata ``{"format": "pt"}``.
train_ckpt.pt
    A training checkpoint: ``model`` (== cnn.pt), ``optimizer`` (Adam: ``state.N.step``/``exp_avg``/
    ``exp_avg_sq`` and ``param_groups``), ``lr_scheduler`` (StepLR), ``model_ema`` (EMA of the
    weights, slightly different values), ``epoch``, ``global_step``, ``best_acc``, ``hparams``.
    Loads with ``weights_only=True``.
full_model.pt
    ``torch.save(model)`` of a whole module whose class (``FullModelOnlyHere``) exists only in this
    script (pickled as ``__main__.FullModelOnlyHere``): needs ``weights_only=False`` and fails to
    unpickle anywhere else. Has a BatchNorm, a non-persistent buffer (``window``) and a plain tensor
    attribute (``temperature``) that is neither a parameter nor a buffer.
transformer.pt
    ``TinyTransformer().state_dict()`` plus ``embeddings.position_ids`` (int64 [1, 16]) as older
    library versions saved it (non-persistent in the current model, so it is an unexpected key).
    ``lm_head.weight`` is tied to ``embeddings.word_embeddings.weight``: two keys, one storage.
    Has a persistent bool buffer ``causal_mask``; the rotary ``inv_freq`` buffers are absent
    (non-persistent).
dtypes.pt
    One tensor per dtype (bfloat16, float16, float32, float64, int8, int32, int64, uint8, bool,
    complex64), a 0-d tensor, an empty [0, 4] tensor, a non-contiguous transposed tensor, a slice
    view sharing storage (at offset 3) with another key, and non-tensor values (int, float, str,
    tuple, ``torch.float16``, nested dict/list). Loads with ``weights_only=True``.
legacy.pt
    The cnn.pt state dict in the pre-1.6 non-zip format (``_use_new_zipfile_serialization=False``).
sharded/
    Hugging Face style safetensors shards of the transformer weights: ``model.safetensors.index.json``
    + ``model-0000{1,2}-of-00002.safetensors``; the tied ``lm_head.weight`` is dropped, as
    transformers does for tied weights.
sharded_bin/
    The same split as torch pickles: ``pytorch_model.bin.index.json`` +
    ``pytorch_model-0000{1,2}-of-00002.bin``.
cuda.pt
    A small state dict whose storages are tagged ``cuda:0``, crafted on a CPU-only machine by
    rewriting the location strings in ``data.pkl`` (see ``retag_storage_locations``). Loading it
    without a GPU needs ``map_location``.
dcp/
    A ``torch.distributed.checkpoint`` directory (``.metadata`` + ``__0_0.distcp``) of the cnn.pt
    state dict, written in a single process without a process group.

Determinism: all values come from fixed seeds. torch's zip writer uses fixed timestamps and its
``.data/serialization_id`` is derived from the record names and CRCs (not random), so the .pt
files are byte-identical between runs. Two sources of run-to-run variation are removed here:
the legacy format names storages by memory address (``canonicalize_legacy_storage_keys``), and the
DCP writer stores a random ``save_id`` and the absolute checkpoint path in ``.metadata``
(``ReproducibleFileSystemWriter``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from models import SmallCNN, TinyTransformer
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.metadata import StorageMeta

HERE = Path(__file__).resolve().parent
MAX_TOTAL_BYTES = 2_500_000
CUDA_ERROR = "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False"

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------
# A model class that exists only in this file (for full_model.pt)
# --------------------------------------------------------------------------------------------


class FullModelOnlyHere(nn.Module):
    """Pickled whole; its class lives in this script only (``__main__`` when run as a script)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)
        # Non-persistent buffer: travels with the full pickle, absent from state_dict().
        self.register_buffer("window", torch.hann_window(4, periodic=False), persistent=False)
        # Plain tensor attribute: neither parameter nor buffer.
        self.temperature = torch.tensor(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.proj(x))) * self.window
        return self.head(x) / self.temperature


# --------------------------------------------------------------------------------------------
# Pickle surgery helpers (protocol 2 pickles as written by torch.save)
# --------------------------------------------------------------------------------------------

_MEMO_PUT = {"BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET"}
_MARK_CONSUMERS = {"TUPLE", "LIST", "DICT", "SETITEMS", "APPENDS", "OBJ", "INST", "FROZENSET", "ADDITEMS", "POP_MARK"}
_SIMPLE_PUSH = {"BINUNICODE", "SHORT_BINUNICODE", "GLOBAL", "BININT", "BININT1", "BININT2", "LONG1", "NONE"} | _MEMO_GET


@dataclass
class _Op:
    name: str
    arg: Any
    start: int
    end: int


@dataclass
class _Element:
    """One element of a persistent-id tuple: the op that pushes it and the memo slot it is put in."""

    op: _Op
    value: Any
    memo_put: int | None


def _ops(data: bytes) -> list[_Op]:
    items = list(pickletools.genops(data))
    out: list[_Op] = []
    for i, (opcode, arg, pos) in enumerate(items):
        end = items[i + 1][2] if i + 1 < len(items) else len(data)
        out.append(_Op(opcode.name, arg, pos, end))
    if not out or out[0].name != "PROTO" or out[0].arg != 2:
        raise ValueError("expected a protocol 2 pickle (as torch.save writes by default)")
    return out


def _persistent_id_tuples(ops: list[_Op]) -> list[list[_Element]]:
    """Elements of every ``MARK ... TUPLE [BINPUT] BINPERSID`` persistent-id tuple, in order."""
    memo: dict[int, Any] = {}
    marks: list[int] = []
    tuple_spans: dict[int, int] = {}  # index of TUPLE op -> index of its MARK op
    for i, op in enumerate(ops):
        if op.name == "MARK":
            marks.append(i)
        elif op.name in _MARK_CONSUMERS:
            start = marks.pop()
            if op.name == "TUPLE":
                tuple_spans[i] = start
        elif op.name in _MEMO_PUT and i > 0:
            prev = ops[i - 1]
            if prev.name in ("BINUNICODE", "SHORT_BINUNICODE", "GLOBAL"):
                memo[op.arg] = prev.arg

    result: list[list[_Element]] = []
    for i, op in enumerate(ops):
        if op.name != "BINPERSID":
            continue
        j = i - 1
        if ops[j].name in _MEMO_PUT:
            j -= 1
        if j not in tuple_spans:
            raise ValueError(f"persistent id at byte {op.start} is not a MARK...TUPLE tuple")
        elements: list[_Element] = []
        for k in range(tuple_spans[j] + 1, j):
            inner = ops[k]
            if inner.name in _MEMO_PUT:
                elements[-1].memo_put = inner.arg
                continue
            if inner.name not in _SIMPLE_PUSH:
                raise ValueError(f"unsupported op {inner.name} inside a persistent id at byte {inner.start}")
            value = memo.get(inner.arg) if inner.name in _MEMO_GET else inner.arg
            elements.append(_Element(inner, value, None))
        if not elements or elements[0].value != "storage":
            raise ValueError(f"persistent id at byte {op.start} is not a ('storage', ...) tuple")
        result.append(elements)
    return result


def _binunicode(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _rewrite_persistent_id_slot(data: bytes, slot: int, new_value: Callable[[str], str]) -> bytes:
    """Replace the string at ``slot`` of every ``('storage', ...)`` persistent id.

    A slot pushed by ``BINUNICODE`` gets a new payload (memo puts after it are kept, so later
    ``BINGET``s of the same memo entry inside other persistent ids follow along). A slot pushed by
    ``BINGET`` of a memo entry not defined by a rewritten slot becomes a fresh ``BINUNICODE``.
    Raises if a rewritten memo entry is also fetched outside those slots (it would change
    unrelated data).
    """
    ops = _ops(data)
    tuples = _persistent_id_tuples(ops)
    replacements: dict[int, tuple[int, bytes]] = {}
    rewritten_memo: set[int] = set()
    slot_op_starts: set[int] = set()
    for elements in tuples:
        el = elements[slot]
        if not isinstance(el.value, str):
            raise ValueError(f"slot {slot} of a persistent id is {el.value!r}, not a string")
        slot_op_starts.add(el.op.start)
        if el.op.name in ("BINUNICODE", "SHORT_BINUNICODE"):
            replacements[el.op.start] = (el.op.end, _binunicode(new_value(el.value)))
            if el.memo_put is not None:
                rewritten_memo.add(el.memo_put)
    for elements in tuples:
        el = elements[slot]
        if el.op.name in _MEMO_GET and el.op.arg not in rewritten_memo:
            replacements[el.op.start] = (el.op.end, _binunicode(new_value(el.value)))
    for op in ops:
        if op.name in _MEMO_GET and op.arg in rewritten_memo and op.start not in slot_op_starts:
            raise ValueError(f"memo entry {op.arg} is shared with data outside the persistent ids")

    out = bytearray()
    pos = 0
    for start in sorted(replacements):
        end, new = replacements[start]
        out += data[pos:start] + new
        pos = end
    out += data[pos:]
    return bytes(out)


def storage_locations(data: bytes) -> list[str]:
    """The location tag of every persistent id in a torch.save pickle, in order."""
    return [elements[3].value for elements in _persistent_id_tuples(_ops(data))]


def retag_storage_locations(src: bytes | Path, dst: Path, location: str = "cuda:0") -> None:
    """Copy a zip-format torch.save file, changing every storage location tag to ``location``.

    In ``data.pkl`` each storage is a persistent id ``('storage', <StorageType>, key, location,
    numel)`` whose location is a BINUNICODE string (``X`` + uint32 LE length + UTF-8). Only those
    tuple slots are rewritten (found with ``pickletools.genops``, never by a blind byte replace).
    The archive is rebuilt with torch's own ``PyTorchFileWriter`` so member names, stored
    (uncompressed) records, the 64-byte alignment of ``data/*`` and the trailing ``version`` and
    ``.data/serialization_id`` records are exactly what ``torch.save`` writes; the archive prefix
    comes from ``dst``'s file name, as with ``torch.save``.
    """
    reader = torch._C.PyTorchFileReader(io.BytesIO(src) if isinstance(src, bytes) else str(src))
    records = {name: reader.get_record(name) for name in reader.get_all_records()}
    del reader
    records["data.pkl"] = _rewrite_persistent_id_slot(records["data.pkl"], 3, lambda _old: location)
    writer = torch._C.PyTorchFileWriter(str(dst), True, int(records.get(".storage_alignment", b"64")))
    for name, payload in records.items():
        if name in ("version", ".data/serialization_id"):
            continue  # written by write_end_of_file, in torch.save's order
        writer.write_record(name, payload, len(payload))
    writer.write_end_of_file()
    del writer


def _pickle_end(data: bytes, start: int) -> int:
    for opcode, _arg, pos in pickletools.genops(data[start:]):
        if opcode.name == "STOP":
            return start + pos + 1
    raise ValueError("unterminated pickle")


def canonicalize_legacy_storage_keys(path: Path, base: int = 94_000_000_000_000, stride: int = 4096) -> None:
    """Make a legacy (non-zip) torch.save file reproducible.

    The legacy format names each storage ``str(storage._cdata)`` (a heap address), writes the
    main pickle, then a pickled list ``sorted(keys)`` and the raw storages in that order, each as
    int64 numel + bytes. Keys thus differ per run and so does the storage order. This renames the
    keys to fixed address-like numbers of equal width in first-use order and rewrites the key list
    and storage order to match: the same layout torch would write had the addresses been those.
    """
    data = path.read_bytes()
    pos = 0
    for _ in range(3):  # magic number, protocol version, sys_info
        pos = _pickle_end(data, pos)
    main_start, main_end = pos, _pickle_end(data, pos)
    keys_end = _pickle_end(data, main_end)
    old_keys: list[str] = pickle.loads(data[main_end:keys_end])

    main = data[main_start:main_end]
    dtypes: dict[str, torch.dtype] = {}
    order: list[str] = []
    for elements in _persistent_id_tuples(_ops(main)):
        key = elements[2].value
        if key not in dtypes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TypedStorage deprecation warning on .dtype
                dtypes[key] = getattr(torch, elements[1].value.split()[-1]).dtype
            order.append(key)
        if elements[5].value is not None:
            raise ValueError("storage views in legacy files are not supported")
    if sorted(order) != sorted(old_keys):
        raise ValueError("storage keys in the pickle do not match the key list")

    blobs: dict[str, bytes] = {}
    pos = keys_end
    for key in old_keys:
        (numel,) = struct.unpack("<q", data[pos : pos + 8])
        size = 8 + numel * dtypes[key].itemsize
        blobs[key] = data[pos : pos + size]
        pos += size
    if pos != len(data):
        raise ValueError("trailing bytes after the legacy storages")

    rename = {old: str(base + i * stride) for i, old in enumerate(order)}
    new_main = _rewrite_persistent_id_slot(main, 2, rename.__getitem__)
    new_keys = sorted(rename.values())
    back = {new: old for old, new in rename.items()}
    out = bytearray(data[:main_start]) + new_main + pickle.dumps(new_keys, protocol=2)
    for key in new_keys:
        out += blobs[back[key]]
    path.write_bytes(bytes(out))


# --------------------------------------------------------------------------------------------
# DCP writer without random ids or absolute paths in .metadata
# --------------------------------------------------------------------------------------------


class ReproducibleFileSystemWriter(dcp.FileSystemWriter):
    """FileSystemWriter whose ``.metadata`` has a fixed ``save_id`` and a relative checkpoint_id."""

    SAVE_ID = "00000000-0000-4000-8000-000000000000"

    def __init__(self, path: Path) -> None:
        super().__init__(path, thread_count=1)
        self.save_id = self.SAVE_ID

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        super().reset(checkpoint_id)
        self.save_id = self.SAVE_ID

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=Path(Path(self.path).name), save_id=self.save_id)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _clone(sd: StateDict) -> StateDict:
    return {k: v.detach().clone() for k, v in sd.items()}


def train_cnn() -> tuple[SmallCNN, torch.optim.Adam, torch.optim.lr_scheduler.StepLR, StateDict]:
    """SmallCNN after a train-mode forward pass and two Adam steps, plus an EMA of its state."""
    torch.manual_seed(0)
    model = SmallCNN()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 8, 8))  # BN running stats move, num_batches_tracked = 1
    ema = _clone(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    for _ in range(2):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].mul_(0.9).add_(v, alpha=0.1)
                else:
                    ema[k].copy_(v)
    for _ in range(3):  # three epochs
        scheduler.step()
    return model, optimizer, scheduler, ema


def build_transformer() -> TinyTransformer:
    torch.manual_seed(1)
    model = TinyTransformer()
    model.eval()
    with torch.no_grad():
        logits = model(torch.randint(0, 64, (2, 16)))
    assert logits.shape == (2, 16, 64)
    return model


def transformer_state_with_position_ids(model: TinyTransformer) -> OrderedDict[str, torch.Tensor]:
    """state_dict() plus ``embeddings.position_ids`` where older versions saved it (first of embeddings.*)."""
    sd = model.state_dict()
    assert "embeddings.position_ids" not in sd
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k.startswith("embeddings.") and "embeddings.position_ids" not in out:
            out["embeddings.position_ids"] = torch.arange(model.embeddings.position_ids.shape[1]).unsqueeze(0)
        out[k] = v
    out._metadata = sd._metadata  # type: ignore[attr-defined]  # keep the per-module version info
    return out


def build_dtypes() -> dict[str, Any]:
    torch.manual_seed(2)
    base = torch.arange(10, dtype=torch.int64)
    return {
        "bfloat16": torch.linspace(-2, 2, 6).to(torch.bfloat16),
        "float16": torch.linspace(-1, 1, 6).to(torch.float16),
        "float32": torch.randn(2, 3),
        "float64": torch.randn(3, dtype=torch.float64),
        "int8": torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8),
        "int32": torch.tensor([-(2**31), 0, 2**31 - 1], dtype=torch.int32),
        "int64": torch.tensor([-(2**63), 0, 2**63 - 1], dtype=torch.int64),
        "uint8": torch.tensor([0, 1, 254, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "complex64": torch.tensor([1 + 2j, -0.5j, 3.0], dtype=torch.complex64),
        "scalar_0d": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "transposed": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),
        "base": base,
        "base_slice": base[3:7],
        "int_value": 7,
        "float_value": 0.25,
        "str_value": "hello",
        "tuple_value": (1, "two", 3.0),
        "dtype_value": torch.float16,
        "nested": {"inner": {"weight": torch.ones(2, 2), "note": "deep"}, "items": [1, 2, torch.zeros(3)]},
    }


def build_cuda_source() -> StateDict:
    torch.manual_seed(3)
    model = nn.Sequential(OrderedDict(proj=nn.Linear(4, 3), norm=nn.BatchNorm1d(3)))
    with torch.no_grad():
        model(torch.randn(5, 4))
    return dict(model.state_dict())


def build_full_model() -> FullModelOnlyHere:
    torch.manual_seed(4)
    model = FullModelOnlyHere()
    with torch.no_grad():
        model(torch.randn(8, 6))
    return model.eval()


def split_shards(sd: StateDict, n: int = 2) -> list[StateDict]:
    """Split in key order into ``n`` shards of about equal bytes (like HF's max_shard_size split)."""
    total = sum(t.untyped_storage().nbytes() for t in sd.values())
    limit = -(-total // n)
    shards: list[StateDict] = [{}]
    size = 0
    for k, t in sd.items():
        nbytes = t.untyped_storage().nbytes()
        if shards[-1] and size + nbytes > limit and len(shards) < n:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nbytes
    assert len(shards) == n
    return shards


def write_sharded(folder: Path, shards: list[StateDict], prefix: str, ext: str, index_name: str) -> dict[str, Any]:
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    weight_map: dict[str, str] = {}
    total_size = 0
    for i, shard in enumerate(shards, 1):
        fname = f"{prefix}-{i:05d}-of-{len(shards):05d}.{ext}"
        if ext == "safetensors":
            save_file(shard, str(folder / fname), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / fname)
        for k, t in shard.items():
            weight_map[k] = fname
            total_size += t.untyped_storage().nbytes()
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / index_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _assert_same(a: StateDict | dict[str, Any], b: StateDict | dict[str, Any], ordered: bool = True) -> None:
    assert (list(a) == list(b)) if ordered else (sorted(a) == sorted(b)), (list(a), list(b))
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def assert_zip_data_aligned(path: Path, alignment: int = 64) -> None:
    """Every ``data/*`` record's payload starts at a multiple of ``alignment`` (read from local headers)."""
    with zipfile.ZipFile(path) as zf, path.open("rb") as f:
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED, info.filename
            if "/data/" not in info.filename:
                continue
            f.seek(info.header_offset)
            header = f.read(30)
            assert header[:4] == b"PK\x03\x04"
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            offset = info.header_offset + 30 + name_len + extra_len
            assert offset % alignment == 0, (path.name, info.filename, offset)


def _zip_pickle(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        return zf.read(name)


def _storage_count(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(1 for n in zf.namelist() if "/data/" in n)


def verify(out: Path, cnn_sd: StateDict, tf_model: TinyTransformer, cuda_src: StateDict) -> None:
    load = torch.load
    # cnn.pt / cnn.safetensors / legacy.pt: same tensors
    cnn = load(out / "cnn.pt", weights_only=True)
    _assert_same(cnn, cnn_sd)
    assert int(cnn["bn1.num_batches_tracked"]) == 3
    _assert_same(load_file(str(out / "cnn.safetensors")), cnn_sd, ordered=False)  # stored sorted by dtype, name
    with open(out / "cnn.safetensors", "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        assert json.loads(f.read(hlen))["__metadata__"] == {"format": "pt"}
    legacy_bytes = (out / "legacy.pt").read_bytes()
    assert not zipfile.is_zipfile(out / "legacy.pt") and legacy_bytes[:2] == b"\x80\x02"
    _assert_same(load(out / "legacy.pt", weights_only=True), cnn_sd)

    # train_ckpt.pt
    ckpt = load(out / "train_ckpt.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "model_ema", "epoch", "global_step", "best_acc", "hparams"}
    _assert_same(ckpt["model"], cnn_sd)
    state = ckpt["optimizer"]["state"]
    assert len(state) == len(list(SmallCNN().parameters()))
    assert all({"step", "exp_avg", "exp_avg_sq"} <= set(s) and float(s["step"]) == 2.0 for s in state.values())
    assert ckpt["lr_scheduler"]["last_epoch"] == 3
    assert not torch.equal(ckpt["model_ema"]["conv1.weight"], cnn_sd["conv1.weight"])
    assert torch.allclose(ckpt["model_ema"]["conv1.weight"], cnn_sd["conv1.weight"], atol=1e-2)

    # full_model.pt: full pickle; weights_only refuses it; other processes cannot find the class
    try:
        load(out / "full_model.pt", weights_only=True)
        raise AssertionError("full_model.pt loaded with weights_only=True")
    except pickle.UnpicklingError as exc:
        assert "FullModelOnlyHere" in str(exc)
    if FullModelOnlyHere.__module__ == "__main__":
        full = load(out / "full_model.pt", weights_only=False)
        assert isinstance(full, FullModelOnlyHere) and "window" not in full.state_dict()
        assert float(full.temperature) == 0.5 and int(full.norm.num_batches_tracked) == 1
    code = f"import torch; torch.load({str(out / 'full_model.pt')!r}, weights_only=False)"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True)
    assert proc.returncode != 0 and "Can't get attribute 'FullModelOnlyHere'" in proc.stderr, proc.stderr

    # transformer.pt: extra position_ids, tied weights share one storage, bool buffer present
    tf = load(out / "transformer.pt", weights_only=True)
    keys = list(tf)
    assert keys[keys.index("embeddings.position_ids") + 1] == "embeddings.word_embeddings.weight"
    assert tf["embeddings.position_ids"].dtype == torch.int64
    assert tf["causal_mask"].dtype == torch.bool and not any(k.endswith("inv_freq") for k in tf)
    tied = tf["lm_head.weight"], tf["embeddings.word_embeddings.weight"]
    assert tied[0].untyped_storage().data_ptr() == tied[1].untyped_storage().data_ptr()
    assert _storage_count(out / "transformer.pt") == len(tf) - 1
    result = TinyTransformer().load_state_dict(tf, strict=False)
    assert result.unexpected_keys == ["embeddings.position_ids"] and not result.missing_keys
    for k, v in tf_model.state_dict().items():
        assert torch.equal(tf[k], v), k

    # dtypes.pt
    d = load(out / "dtypes.pt", weights_only=True)
    assert d["bfloat16"].dtype == torch.bfloat16 and d["complex64"].dtype == torch.complex64
    assert d["scalar_0d"].dim() == 0 and d["empty"].shape == (0, 4)
    assert not d["transposed"].is_contiguous() and d["transposed"].shape == (4, 3)
    assert d["base_slice"].untyped_storage().data_ptr() == d["base"].untyped_storage().data_ptr()
    assert d["base_slice"].storage_offset() == 3 and d["base_slice"].tolist() == [3, 4, 5, 6]
    assert d["dtype_value"] is torch.float16 and d["tuple_value"] == (1, "two", 3.0)
    assert torch.equal(d["nested"]["items"][2], torch.zeros(3))

    # sharded/ and sharded_bin/: same split, lm_head dropped, total_size = tensor bytes
    expected = {k: v for k, v in tf_model.state_dict().items() if k != "lm_head.weight"}
    for folder, index_name in (("sharded", "model.safetensors.index.json"), ("sharded_bin", "pytorch_model.bin.index.json")):
        index = json.loads((out / folder / index_name).read_text())
        merged: dict[str, torch.Tensor] = {}
        for fname in sorted(set(index["weight_map"].values())):
            path = out / folder / fname
            part = load_file(str(path)) if fname.endswith(".safetensors") else load(path, weights_only=True)
            assert all(index["weight_map"][k] == fname for k in part)
            merged.update(part)
        assert set(merged) == set(expected) == set(index["weight_map"])
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())
        for k, v in expected.items():
            assert torch.equal(merged[k], v), k

    # cuda.pt: tagged cuda:0; needs map_location without a GPU
    assert set(storage_locations(_zip_pickle(out / "cuda.pt"))) == {"cuda:0"}
    if torch.cuda.is_available():
        assert all(t.device == torch.device("cuda:0") for t in load(out / "cuda.pt", weights_only=True).values())
    else:
        try:
            load(out / "cuda.pt", weights_only=True)
            raise AssertionError("cuda.pt loaded without map_location on a CPU-only machine")
        except RuntimeError as exc:
            assert CUDA_ERROR in str(exc), exc
    _assert_same(load(out / "cuda.pt", map_location="cpu", weights_only=True), cuda_src)

    # dcp/: reads back into a fresh state dict
    torch.manual_seed(123)
    fresh = SmallCNN().state_dict()
    assert not torch.equal(fresh["conv1.weight"], cnn_sd["conv1.weight"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(fresh, checkpoint_id=out / "dcp", no_dist=True)
    _assert_same(dict(fresh), cnn_sd)

    for path in out.rglob("*.pt"):
        if path.name != "legacy.pt":
            assert_zip_data_aligned(path)
    for path in out.rglob("*.bin"):
        assert_zip_data_aligned(path)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


SINGLE_FILES = (
    "cnn.pt",
    "cnn.safetensors",
    "train_ckpt.pt",
    "full_model.pt",
    "transformer.pt",
    "dtypes.pt",
    "legacy.pt",
    "cuda.pt",
)
FOLDERS = ("sharded", "sharded_bin", "dcp", "quantized")


def _as_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 bit patterns held in int64 as the int32 GPTQ stores."""
    return (words - ((words >> 31) << 32)).to(torch.int32)


def gptq_pack(w: torch.Tensor, group: int = 32) -> dict[str, torch.Tensor]:
    """Round-to-nearest int4, asymmetric, one fp16 scale and zero per `group` input channels, packed
    as AutoGPTQ's QuantLinear.pack does (qlinear_cuda_old.py): qweight [in/8, out] int32 with input
    rows lowest bits first, qzeros [groups, out/8] holding zero - 1 (GPTQ v1), scales [groups, out],
    g_idx [in]. No calibration: the rounding a GPTQ run would improve on, enough to show the layout."""
    out_f, in_f = w.shape
    g = w.double().reshape(out_f, in_f // group, group)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / 15).clamp(min=1e-8).half()
    zero = torch.round(-lo / scale.double()).clamp(0, 15)
    q = torch.clamp(torch.round(g / scale.double().unsqueeze(-1)) + zero.unsqueeze(-1), 0, 15)
    q = q.reshape(out_f, in_f).t().to(torch.int64)  # [in, out]
    qweight = torch.zeros(in_f // 8, out_f, dtype=torch.int64)
    for j in range(8):
        qweight |= q[j::8] << (4 * j)
    zm = (zero.t().to(torch.int64) - 1) & 15  # [groups, out]
    qzeros = torch.zeros(in_f // group, out_f // 8, dtype=torch.int64)
    for j in range(8):
        qzeros |= zm[:, j::8] << (4 * j)
    return {"qweight": _as_int32(qweight), "qzeros": _as_int32(qzeros), "scales": scale.t().contiguous(),
            "g_idx": (torch.arange(in_f) // group).to(torch.int32)}


def write_quantized(folder: Path, sd: StateDict) -> None:
    """A GPTQ int4 (group 32) copy of the transformer's HF-style state dict: every linear layer's
    weight packed, the rest in float16, with the config.json quantization_config that names it."""
    folder.mkdir(exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if name.startswith("layers.") and name.endswith("_proj.weight"):
            module = name.removesuffix(".weight")
            tensors |= {f"{module}.{k}": v for k, v in gptq_pack(t).items()}
        else:
            tensors[name] = t.half() if t.is_floating_point() else t
    save_file(tensors, str(folder / "model.safetensors"))
    config = {"model_type": "tiny-transformer", "torch_dtype": "float16",
              "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False,
                                      "sym": False, "checkpoint_format": "gptq"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _generated(out: Path) -> Iterator[Path]:
    for name in SINGLE_FILES:
        yield out / name
    for folder in FOLDERS:
        yield from sorted((out / folder).iterdir())


def main(out: Path = HERE) -> None:
    # 1-3, 7: CNN state dict, safetensors copy, training checkpoint, legacy format
    model, optimizer, scheduler, ema = train_cnn()
    cnn_sd = _clone(model.state_dict())
    torch.save(model.state_dict(), out / "cnn.pt")
    save_file(cnn_sd, str(out / "cnn.safetensors"), metadata={"format": "pt"})
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "model_ema": ema,
            "epoch": 3,
            "global_step": 120,
            "best_acc": 0.875,
            "hparams": {"lr": 1e-3, "batch_size": 32, "arch": "SmallCNN"},
        },
        out / "train_ckpt.pt",
    )
    torch.save(model.state_dict(), out / "legacy.pt", _use_new_zipfile_serialization=False)
    canonicalize_legacy_storage_keys(out / "legacy.pt")

    # 4: whole-module pickle of a class defined only here
    torch.save(build_full_model(), out / "full_model.pt")

    # 5: transformer with a stale persistent position_ids and tied lm_head
    tf_model = build_transformer()
    torch.save(transformer_state_with_position_ids(tf_model), out / "transformer.pt")

    # 6: dtypes and odd values
    torch.save(build_dtypes(), out / "dtypes.pt")

    # 8: HF-style shards (tied lm_head.weight dropped, as transformers does)
    tf_sd = {k: v for k, v in tf_model.state_dict().items() if k != "lm_head.weight"}
    shards = split_shards(tf_sd)
    write_sharded(out / "sharded", shards, "model", "safetensors", "model.safetensors.index.json")
    write_sharded(out / "sharded_bin", shards, "pytorch_model", "bin", "pytorch_model.bin.index.json")

    # 11: GPTQ int4 copy of the transformer (HF-style folder with quantization_config)
    write_quantized(out / "quantized", tf_sd)

    # 9: storages tagged cuda:0, crafted on CPU
    cuda_src = build_cuda_source()
    buf = io.BytesIO()
    torch.save(cuda_src, buf)
    retag_storage_locations(buf.getvalue(), out / "cuda.pt", "cuda:0")

    # 10: torch.distributed.checkpoint directory, single process, no process group
    dcp_dir = out / "dcp"
    dcp_dir.mkdir(exist_ok=True)
    for old in dcp_dir.iterdir():
        old.unlink()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(dict(cnn_sd), storage_writer=ReproducibleFileSystemWriter(dcp_dir), no_dist=True)

    verify(out, cnn_sd, tf_model, cuda_src)

    total = 0
    for path in _generated(out):
        size = path.stat().st_size
        total += size
        print(f"{size:>9,d}  {path.relative_to(out)}")
    print(f"{total:>9,d}  total")
    assert total < MAX_TOTAL_BYTES, total
    print("all checks passed")


if __name__ == "__main__":
    main()

"""The hidden-payload classes of the scanner corpus (benchmarks/scan_corpus.py calls `add_cases`): a
second pickle, trailing bytes, unreferenced members, npy/npz object arrays, capability gadgets under
private spellings and getattr, and the benign files scanners used to refuse (full models holding torch
functions, TorchScript, legacy full models) or call malformed (files that are not checkpoints)."""

from __future__ import annotations

import functools
import io
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any

import torch

from .pickle_bytes import (
    DANGEROUS,
    EMPTY_DICT,
    MALFORMED,
    NEEDS_TRUST,
    SAFE,
    STOP,
    TinyNet,
    binunicode,
    call,
    glob,
    legacy_bytes,
    proto,
    torch_zip_bytes,
    wrap,
    write_zip,
    zip_members,
)


class GeluNet(torch.nn.Module):
    """A transformers-style block: a GELU function reference, a partial, a bound-method hook."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.act_fn = torch.nn.functional.gelu
        self.act = functools.partial(torch.nn.functional.silu, inplace=False)
        self.hook = self.fc.forward  # pickled as getattr(<Linear instance>, "forward")


class ScriptNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.bn = torch.nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


def npy_object_array(pickle_bytes: bytes) -> bytes:
    """An .npy file whose object array is the given pickle (np.load(allow_pickle=True) unpickles it)."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + pickle_bytes


def frame_divergent(body: bytes) -> bytes:
    """python/cpython#154848 with the payload `body`: pickletools.genops reads ... FRAME 2, one
    263-byte BINBYTES, POP_MARK, STOP; CPython's C unpickler before 3.13.15 reads the BINBYTES opcode
    and its length inside a 2-byte frame, then runs `body` from inside those "bytes"."""
    hidden = (body + b"(").ljust(256 + 5, b"N")
    fill = b"V" + b"a" * (8192 * 16 - 17) + b"\n"  # UNICODE: puts the frame where the C reader's buffer ends
    frame = b"\x95" + struct.pack("<Q", 2)  # FRAME of 2 bytes: the BINBYTES opcode and one length byte
    return proto(5) + b"N" + fill + b"0(" + frame + b"B" + struct.pack("<I", 263) + b"\x00\x00" + hidden + b"1" + STOP


def framed_torch_zip(sd: dict[str, Any], protocol: int) -> bytes:
    """torch.save with pickle_protocol 4/5: FRAMEs that end where they should (must not be refused)."""
    buf = io.BytesIO()
    torch.save(sd, buf, pickle_protocol=protocol)
    return buf.getvalue()


def _torchscript_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "script.pt")
        torch.jit.save(torch.jit.script(ScriptNet()), path)
        with open(path, "rb") as f:
            return f.read()


def add_cases(add: Callable[..., None], real: bytes, real_pkl: bytes, sd: dict[str, Any], os_system: bytes,
              marker: str) -> None:
    """Append the hidden-payload cases through the corpus's `add(name, data, expected, technique, ext, torch_load)`."""
    payload = wrap(os_system)
    members = zip_members(real)
    prefix = members[0][0].split("/", 1)[0]

    def in_zip(body: bytes) -> bytes:
        return write_zip([(n, wrap(body) if n.endswith("/data.pkl") else d) for n, d in members])

    # -- several pickles, trailing bytes, members torch never reads -----------------------------------
    add("second-pickle-after-stop", write_zip([(n, d + payload if n.endswith("/data.pkl") else d) for n, d in members]),
        DANGEROUS, "a benign data.pkl followed by a payload pickle in the same member (loaders calling load twice)",
        torch_load=False)
    add("second-pickle-bare-stream", proto(2) + EMPTY_DICT + STOP + payload, DANGEROUS,
        "a bare stream: an empty dict pickle, then a payload pickle (numpy/joblib-style repeated load)", ext=".bin",
        torch_load=False)
    add("zip-trailing-pickle", real + payload, DANGEROUS,
        "a payload pickle appended after the zip end-of-central-directory record", torch_load=False)
    add("legacy-trailing-pickle", legacy_bytes(sd) + payload, DANGEROUS,
        "a payload pickle appended after a legacy file's last storage", torch_load=False)
    add("zip-unreferenced-data-member", write_zip(members + [(f"{prefix}/data/99", payload)]), DANGEROUS,
        "a payload pickle in archive/data/99, a storage record data.pkl never names", torch_load=False)
    npy = npy_object_array(wrap(os_system, 3))
    add("npy-object-array-in-zip", write_zip(members + [(f"{prefix}/extra/arr.npy", npy)]), DANGEROUS,
        "an .npy object array (a pickle after the npy header) as an extra member of a torch zip", torch_load=False)
    add("npz-object-array", write_zip([("arr.npy", npy)]), DANGEROUS, "an .npz whose array is an object array payload",
        ext=".npz", torch_load=False)
    add("npy-object-array", npy, DANGEROUS, "an .npy object array payload (np.load(allow_pickle=True))", ext=".npy",
        torch_load=False)

    # -- frame-boundary divergence: a static walk and the C unpickler read different opcodes -----------
    hidden = frame_divergent(os_system)
    add("frame-boundary-divergence-zip", write_zip([(n, hidden if n.endswith("/data.pkl") else d) for n, d in members]),
        DANGEROUS, "data.pkl whose FRAME lengths make genops see one BINBYTES where the C unpickler runs "
        "GLOBAL os system ... REDUCE (python/cpython#154848)")
    add("frame-boundary-divergence-bare", hidden, DANGEROUS,
        "the same framing trick as a bare pickle stream (torch.load's legacy path unpickles it)", ext=".pkl")
    safe_hidden = frame_divergent(call(glob("collections", "OrderedDict")))
    add("frame-boundary-divergence-hides-safe-global",
        write_zip([(n, safe_hidden if n.endswith("/data.pkl") else d) for n, d in members]), MALFORMED,
        "the framing trick hiding only an allowlisted global: still parser confusion, a finding")

    # -- capabilities under private spellings, getattr gadgets ---------------------------------------
    add("logging-filehandler", in_zip(call(glob("logging", "FileHandler"), binunicode(marker))), DANGEROUS,
        "logging.FileHandler(marker): creates a file at load time")
    add("numpy-private-npyio-load", in_zip(call(glob("numpy.lib._npyio_impl", "load"), binunicode(marker),
                                                 glob("builtins", "True"))), DANGEROUS,
        "numpy.lib._npyio_impl.load (the private spelling of np.load): a nested deserialiser")
    add("getattr-dunder-globals", in_zip(call(glob("builtins", "getattr"), glob("torch.nn.functional", "relu"),
                                              binunicode("__globals__"))), DANGEROUS,
        "getattr(torch.nn.functional.relu, '__globals__'): a route to every module global")
    part = call(glob("functools", "partial"), glob("builtins", "getattr"), glob("logging", "os"), binunicode("system"))
    add("getattr-via-partial", in_zip(call(call(part), binunicode("touch " + marker))), DANGEROUS,
        "functools.partial(getattr, logging.os, 'system')()(cmd): getattr handed to a combinator")

    # -- benign files that must not be refused -----------------------------------------------------
    torch.manual_seed(0)
    add("control-full-model-gelu", torch_zip_bytes(GeluNet()), NEEDS_TRUST,
        "control: torch.save(model) holding torch._C._nn.gelu, functools.partial(silu) and a bound-method hook")
    add("control-torchscript", _torchscript_bytes(), NEEDS_TRUST,
        "control: torch.jit.save of a scripted module (code/ source text and debug pickles inside)")
    if TinyNet is not None:
        add("control-legacy-full-model", legacy_bytes(TinyNet()), NEEDS_TRUST,
            "control: legacy torch.save(model): class source strings ride along as data")

    add("control-framed-protocol-5", framed_torch_zip(sd, 5), SAFE,
        "control: torch.save(..., pickle_protocol=5): well-formed FRAMEs")

    # -- not checkpoints: unreadable input (exit 2), not a security finding ---------------------------
    add("control-not-checkpoint-png", b"\x89PNG\r\n\x1a\n" + bytes(64), MALFORMED, "control: a PNG named .pt (exit 2)")
    add("control-not-checkpoint-noise", b"\x07\xfe" + bytes(range(256)) * 4, MALFORMED,
        "control: random bytes named .pt (exit 2)")
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    add("control-not-checkpoint-npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8),
        MALFORMED, "control: a numeric .npy array (exit 2)", ext=".npy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", b"secret")
    enc = bytearray(buf.getvalue())
    enc[6] |= 1  # the encryption flag: an encrypted document zip, not a torch archive
    add("control-not-checkpoint-encrypted-zip", bytes(enc), MALFORMED, "control: an encrypted document zip (exit 2)")

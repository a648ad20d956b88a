"""The layout of a torch.export archive (`.pt2`), as torch/export/pt2_archive/_package.py writes it: the
exported programs (models/<name>.json), their weights and constants configs, and how torch.export.load
reads each record. Parsed from JSON only; formats/pt2.py lists the tensors, formats/pt2scan.py the findings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..io.limits import load_json
from ..state import Evidence, Kind, Source
from .zipcheck import Archive

# torch/_export/serde/schema.py: ScalarType and Layout, by number.
DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64",
          9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16", 28: "uint16",
          29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz",
          33: "float8_e8m0fnu", 34: "uint32", 35: "uint64"}
LAYOUTS = {1: "sparse_coo", 2: "sparse_csr", 3: "sparse_csc", 4: "sparse_bsr", 5: "sparse_bsc", 6: "_mkldnn",
           7: "strided"}
# Records torch.export.save writes besides the models, configs and payloads; extra/ holds text files.
RECORDS = frozenset({"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"})
NATIVE = (".so", ".dll", ".dylib", ".pyd")  # AOTInductor's compiled model: loading the package runs it
WEIGHTS, CONSTANTS, AOTI = "data/weights/", "data/constants/", "data/aotinductor/"
# The records a .pt2 may start with (torch.export.save writes weights first, a package may start anywhere).
FIRST_RECORDS = ("data/", "models/", "archive_format", "archive_version", "extra/", "byteorder", ".data/",
                 "xl_model_weights/")


@dataclass(frozen=True)
class Payload:
    """One entry of a weights or constants config: where torch.export.load finds the value of `fqn`."""

    fqn: str
    record: str  # "data/weights/weight_0", relative to the archive folder
    is_param: bool
    use_pickle: bool
    meta: dict[str, Any] | None

    @property
    def loader(self) -> str:
        """How torch.export.load reads the record (torch/export/pt2_archive/_package.py)."""
        name = self.record.rsplit("/", 1)[1]
        if name.startswith("custom_obj_"):
            return "torchbind"  # torch._C._pickle_load_obj: TorchScript's unpickler, the class's __setstate__
        if name.startswith("opaque_obj_"):
            return "pickle"  # pickle.loads
        return "torch.load" if self.use_pickle else "raw"  # what torch.export.load would use (a full unpickle) / raw bytes


@dataclass(frozen=True)
class Program:
    """One exported program of the archive (models/<name>.json and its two configs)."""

    name: str
    kinds: dict[str, tuple[Kind, Evidence]]
    payloads: tuple[Payload, ...]
    constants: frozenset[str]  # fqns from the constants config (not in ep.state_dict)


def is_pt2(arc: Archive) -> bool:
    name = arc.lookup("archive_format")
    return name is not None and arc.member(name, 16).strip() == b"pt2"


def programs(arc: Archive) -> list[Program]:
    """Every exported program, in name order."""
    names = sorted(n[len(arc.prefix) + 7:-5] for n in arc.infos
                   if n.startswith(arc.prefix + "models/") and n.endswith(".json") and "/" not in n[len(arc.prefix) + 7:])
    return [_program(arc, name) for name in names]


def _json(arc: Archive, rel: str) -> Any:
    name = arc.lookup(rel)
    if name is None:
        return None
    try:
        return load_json(arc.member(name))
    except ValueError as exc:
        raise BadInput(arc.path, f"{rel} is not valid JSON: {exc}") from exc


def _program(arc: Archive, name: str) -> Program:
    doc = _json(arc, f"models/{name}.json")
    specs = _get(doc, ("graph_module", "signature", "input_specs"), list, arc.path, f"models/{name}.json")
    kinds: dict[str, tuple[Kind, Evidence]] = {}
    for spec in specs:
        kind = _spec_kind(spec)
        if kind is not None:
            kinds[kind[0]] = kind[1:]
    weights = _config(arc, f"{WEIGHTS}{name}_weights_config.json", WEIGHTS)
    constants = _config(arc, f"{CONSTANTS}{name}_constants_config.json", CONSTANTS)
    return Program(name, kinds, tuple(weights + constants), frozenset(p.fqn for p in constants))


def _spec_kind(spec: Any) -> tuple[str, Kind, Evidence] | None:
    """(fqn, kind, evidence) of one input spec of the graph signature; None for user inputs and tokens."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    (what, body), = spec.items()
    if not isinstance(body, dict):
        return None
    fields = {"parameter": ("parameter_name", Kind.PARAMETER, ""),
              "tensor_constant": ("tensor_constant_name", Kind.CONSTANT, "lifted tensor constant"),
              "custom_obj": ("custom_obj_name", Kind.CONSTANT, "custom object")}
    if what == "buffer":
        kind = Kind.BUFFER if body.get("persistent", True) is not False else Kind.BUFFER_NP
        fqn = body.get("buffer_name")
        return (fqn, kind, Evidence(Source.EXPORT)) if isinstance(fqn, str) else None
    if what not in fields:
        return None
    key, kind, detail = fields[what]
    fqn = body.get(key)
    return (fqn, kind, Evidence(Source.EXPORT, detail)) if isinstance(fqn, str) else None


def _get(doc: Any, keys: tuple[str, ...], typ: type, path: str, where: str) -> Any:
    for k in keys:
        doc = doc.get(k) if isinstance(doc, dict) else None
    if not isinstance(doc, typ):
        raise BadInput(path, f"{where} has no {'.'.join(keys)} {typ.__name__}: not a torch.export archive")
    return doc


def _config(arc: Archive, rel: str, folder: str) -> list[Payload]:
    doc = _json(arc, rel)
    if doc is None:
        raise BadInput(arc.path, f"torch.export archive has no {rel}", "statecli reads archives of torch >= 2.7 "
                                                                     "(older ones keep weights in a pickle)")
    out = []
    for fqn, p in _get(doc, ("config",), dict, arc.path, rel).items():
        name = p.get("path_name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise BadInput(arc.path, f"{rel}: entry {fqn!r} names no plain record (path_name {name!r})")
        meta = p.get("tensor_meta")
        flags = (p.get("is_param", False), p.get("use_pickle", False))
        if not all(isinstance(f, bool) for f in flags) or not isinstance(meta, (dict, type(None))):
            raise BadInput(arc.path, f"{rel}: entry {fqn!r} is malformed")
        out.append(Payload(fqn, folder + name, flags[0], flags[1], meta))
    return out




@dataclass(frozen=True)
class AotiWeight:
    """One weight of an AOTInductor model (data/aotinductor/<model>/weights_config.json): a view of a
    tensor torch.save'd to data/weights/<file>."""

    name: str
    record: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


def aoti_weights(arc: Archive) -> dict[str, list[AotiWeight]]:
    """AOTInductor model name -> its weights, from each package's weights_config.json."""
    out: dict[str, list[AotiWeight]] = {}
    for n in sorted(arc.infos):
        rel = n[len(arc.prefix):]
        parts = rel.split("/")
        if not (rel.startswith(AOTI) and len(parts) == 4 and parts[3] == "weights_config.json"):
            continue
        doc = _json(arc, rel)
        if not isinstance(doc, dict):
            raise BadInput(arc.path, f"{rel} is not a JSON object")
        out[parts[2]] = [_aoti_weight(arc.path, rel, k, v) for k, v in doc.items()]
    return out


def _aoti_weight(path: str, rel: str, name: str, v: Any) -> AotiWeight:
    ok = isinstance(v, list) and len(v) == 4 and isinstance(v[0], str) and all(isinstance(x, list) for x in v[1:3])
    ints = [x for part in (v[1], v[2], [v[3]]) for x in part] if ok else []
    if not ok or not all(type(x) is int and 0 <= x < 1 << 62 for x in ints) or "/" in v[0] or v[0] in (".", ".."):
        raise BadInput(path, f"{rel}: weight {name!r} is malformed")
    return AotiWeight(name, WEIGHTS + v[0], tuple(v[1]), tuple(v[2]), v[3])

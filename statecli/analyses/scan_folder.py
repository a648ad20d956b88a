"""What `scan` reads for the paths it is given: a folder checkpoint is scanned whole. A DCP or Hugging
Face folder's loader reads some files (DCP items; index, shards or weights file, config.json); every
other file in the folder a loader of that layout may be asked to read (`extra_state.pt`, a `*.bin`
beside safetensors, `optimizer.pt`, `rng_state*.pth`, `training_args.bin`, `*.pkl`, ...) is scanned too
and listed with its own verdict. Only the loaded files set the exit code unless --strict."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from ..errors import BadInput, StatecliError
from ..formats import _WALKED as LOADABLE  # the files a walked folder holds as checkpoints
from ..formats import expand_paths, resolve_path
from ..formats.hfconfig import ConfigCode, config_code
from ..formats.sharded import read_index
from ..io.urls import is_remote

__all__ = ["CHECKPOINT_SUFFIXES", "Role", "Target", "TargetKind", "checkpoint_names", "plan"]

# Names a loader reads as a checkpoint (torch.load, pickle.load, np.load, safetensors, joblib...): a
# companion with one of these is listed even when it cannot be read; any other file only when its
# bytes are a checkpoint container (a pickle, zip, tar, npy).
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl", ".pickle", ".npy", ".npz",
                       ".joblib", ".dill", ".pck", ".gguf")  # GGUF: its chat templates are what runtimes run
# Companions no checkpoint loader unpickles: text (tokenizers, configs, cards, the code auto_map names,
# which config.json's verdict covers) and other frameworks' weights and media, read by their own
# non-pickle parsers (Flax msgpack, Keras HDF5, ONNX protobuf); skipped without being opened.
_TEXT_SUFFIXES = (".json", ".txt", ".md", ".py", ".jinja", ".yaml", ".yml", ".toml", ".cfg", ".csv", ".tiktoken",
                  ".vocab", ".gitattributes", ".gitignore", ".html", ".msgpack", ".h5", ".onnx", ".tflite",
                  ".png", ".jpg", ".jpeg", ".gif", ".svg", ".wav", ".mp3")
_DCP_OWN = (".metadata", ".distcp")  # the DCP reader's own files (scanned as the DCP checkpoint)
CONFIG = "config.json"


class Role(Enum):
    """LOADED: the layout's default loader reads the file (counts in the exit code). BESIDE: in the
    folder, read only when code asks for it (listed; counts with --strict)."""

    LOADED = "loaded"
    BESIDE = "beside"


class TargetKind(Enum):
    CHECKPOINT = "checkpoint"
    CONFIG = "config"  # a Hugging Face config.json whose auto_map names code


@dataclass(frozen=True)
class Target:
    path: str
    role: Role
    kind: TargetKind = TargetKind.CHECKPOINT
    code: ConfigCode | None = None  # for a CONFIG target
    optional: bool = False  # a companion kept only if its bytes are a checkpoint container


def plan(paths: list[str]) -> list[Target]:
    """Every file or checkpoint `scan` reads for `paths`, each with its role."""
    out: list[Target] = []
    for p in paths:
        if is_remote(p):
            out += [Target(q, Role.LOADED) for q in expand_paths([p])]
        elif not os.path.isdir(p):
            out.append(Target(p, Role.LOADED))
            out += _config(os.path.join(os.path.dirname(os.path.abspath(p)), CONFIG), Role.LOADED)
        else:
            found = _walk(p)
            out += found or [Target(p, Role.LOADED)]  # an empty folder: scan says why
    return out


def _walk(top: str) -> list[Target]:
    out: list[Target] = []
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != ".git")  # a clone's object store: no loader reads it
        names = sorted(files)
        if ".metadata" in names:  # a DCP folder: its items are the checkpoint; everything else beside it
            dirs[:] = []
            out.append(Target(root, Role.LOADED))
            out += _beside(root, [os.path.relpath(os.path.join(r, f), root) for r, ds, fs in os.walk(root)
                                  for f in sorted(fs)], skip={n for n in names if n.endswith(_DCP_OWN)})
            continue
        loaded, shards = _loaded(root, names)
        out += [Target(os.path.join(root, n), Role.LOADED) for n in loaded]
        if CONFIG in names:
            out += _config(os.path.join(root, CONFIG), Role.LOADED)
        out += _beside(root, names, skip=set(loaded) | shards | {CONFIG})
    return out


def _loaded(root: str, names: list[str]) -> tuple[list[str], set[str]]:
    """The files of `root` its layout's default loader reads, and the shards their indexes name. A
    Hugging Face folder (config.json or an index) loads the one checkpoint resolve_path picks, as
    from_pretrained does; any other folder holds independent checkpoints, each loaded on its own
    (as expand_paths lists them for the other commands)."""
    indexes = [n for n in names if n.endswith(".index.json")]
    if CONFIG in names or indexes:
        try:
            chosen = os.path.basename(resolve_path(root))
        except StatecliError:
            chosen = None  # no weights, or several and none preferred: each is a checkpoint of its own
        if chosen in names:
            return [chosen], _shards(root, [chosen])
    shards = _shards(root, indexes)
    return indexes + [n for n in names if n.endswith(LOADABLE) and n not in shards], shards


def _shards(root: str, indexes: list[str]) -> set[str]:
    out: set[str] = set()
    for name in indexes:
        if name.endswith(".index.json"):
            try:
                out |= set(read_index(os.path.join(root, name))[0].values())
            except StatecliError:
                pass  # reported when the index itself is scanned
    return out


def _beside(root: str, rels: list[str], skip: set[str]) -> list[Target]:
    out = []
    for rel in rels:
        low = os.path.basename(rel).lower()
        if rel in skip or low.endswith(_TEXT_SUFFIXES) or not os.path.isfile(os.path.join(root, rel)):
            continue
        out.append(Target(os.path.join(root, rel), Role.BESIDE, optional=not low.endswith(CHECKPOINT_SUFFIXES)))
    return out


def _config(path: str, role: Role) -> list[Target]:
    """config.json as a target when its auto_map names code (transformers would import it if trusted)."""
    if not os.path.isfile(path):
        return []
    try:
        code = config_code(path)
    except BadInput:
        return []  # an unreadable config.json names no code; classification says it cannot use it
    return [] if code is None else [Target(path, role, TargetKind.CONFIG, code)]


def checkpoint_names(path: str) -> tuple[str, ...]:
    """Every name a checkpoint answers to, for `check`'s per-path globs: the path itself and, for a folder
    checkpoint, the folder, its index and every data file (shards, DCP items). So `*.safetensors` covers
    a sharded safetensors folder and `*.index.json` or `models/big` covers it too."""
    names = [path]
    if is_remote(path):
        return tuple(names)
    if path.endswith(".index.json"):
        folder = os.path.dirname(path)
        names.append(folder or ".")
        try:
            names += sorted(os.path.join(folder, s) for s in set(read_index(path)[0].values()))
        except StatecliError:
            pass  # the check itself reports an unreadable index
    elif os.path.isdir(path):
        names += [os.path.join(r, f) for r, _, fs in os.walk(path) for f in sorted(fs)]
    return tuple(names)

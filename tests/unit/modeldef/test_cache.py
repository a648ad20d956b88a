"""The model-description cache (modeldef/cache.py): hits give the built answer without torch or
transformers, and any change of config, transformers or damage to an entry means a rebuild."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from statecli.analyses.inspect import inspect  # noqa: E402
from statecli.load import load_checkpoint  # noqa: E402
from statecli.modeldef import cache, model_for  # noqa: E402
from statecli.state import Kind  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved by save_pretrained, plus one key the model does not have (a report line)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("hf") / "llama"
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(out)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()} | {"extra.weight": torch.zeros(2)}
    (out / "model.safetensors").unlink()
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STATECLI_NO_CACHE", raising=False)
    monkeypatch.setenv("STATECLI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(path: Path) -> tuple[dict[str, Any], list[str], Any]:
    """What `statecli inspect PATH --format json` computes: (its JSON, the notes, the ModelInfo)."""
    ck = load_checkpoint(str(path))
    info, notes = model_for(str(path), None, None, None, None, auto_hf=True)
    assert info is not None
    doc = inspect(ck, model=info).to_dict()
    doc.pop("notes", None)
    return doc, notes, info


def test_hit_equals_built(folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built, notes, info = run(folder)
    assert info.model is not None and "built now in" in notes[0] and "cached for next time" in notes[0]
    assert len(list(cache_dir.glob("*.json"))) == 3  # description, key mapping, load report
    cached, notes2, info2 = run(folder)
    assert info2.model is None and info2.hf is None  # nothing was built
    assert notes2 == [f"classified against {folder / 'config.json'} (LlamaForCausalLM, transformers "
                      f"{cache.transformers_version()}; cached description)"]
    assert cached == built
    assert any(x["key"] == "extra.weight" for x in cached["load_report"])
    assert info2.loader == "from_pretrained" and info2.slots == info.slots and info2.modules == info.modules
    monkeypatch.setenv("STATECLI_NO_CACHE", "1")
    live, notes3, info3 = run(folder)
    assert live == built and info3.model is not None and "STATECLI_NO_CACHE" in notes3[0]


def test_other_keys_build_on_demand(folder: Path, cache_dir: Path) -> None:
    run(folder)
    _, _, info = run(folder)
    assert info.model is None
    out = info.map_keys(["model.norm.weight", "nope"])  # a key set never seen: built live, then stored
    assert list(out) == ["model.norm.weight"] and info.model is not None
    assert info.slots[out["model.norm.weight"].targets[0]].kind == Kind.PARAMETER


def test_config_change_rebuilds(folder: Path, cache_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    other.mkdir()
    for f in folder.iterdir():
        os.symlink(f, other / f.name) if f.name != "config.json" else None
    config = json.loads((folder / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config))
    run(other)
    assert "cached description" in run(other)[1][0]
    (other / "config.json").write_text(json.dumps(config | {"rms_norm_eps": 1e-5}))
    doc, notes, info = run(other)
    assert "built now" in notes[0] and info.model is not None


def test_transformers_version_change_rebuilds(folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(folder)
    assert "cached description" in run(folder)[1][0]
    monkeypatch.setattr(cache, "transformers_version", lambda: "0.0.0-other")
    _, notes, info = run(folder)
    assert "built now" in notes[0] and info.model is not None


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"format": 1, "data": {"$obj": "os.system"}}',
                                    b'{"format": 999, "data": {}}', b"\xff\xfe"])
def test_corrupt_entry_is_ignored_and_replaced(folder: Path, cache_dir: Path, damage: bytes) -> None:
    built, _, _ = run(folder)
    for entry in cache_dir.glob("*.json"):
        entry.write_bytes(damage)
    doc, notes, info = run(folder)
    assert doc == built and "built now" in notes[0]
    assert "cached description" in run(folder)[1][0]  # rewritten
    assert not list(cache_dir.glob(".tmp-*"))


def test_disabled_writes_nothing(folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATECLI_NO_CACHE", "1")
    run(folder)
    assert not cache_dir.exists()


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("STATECLI_NO_CACHE", "STATECLI_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "statecli"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "statecli"
    monkeypatch.setenv("STATECLI_CACHE_DIR", str(tmp_path / "y"))
    assert cache.cache_dir() == tmp_path / "y"
    monkeypatch.setenv("STATECLI_NO_CACHE", "0")
    assert cache.cache_dir() == tmp_path / "y"
    monkeypatch.setenv("STATECLI_NO_CACHE", "1")
    assert cache.cache_dir() is None


def test_encoding_is_exact_and_refuses_other_types() -> None:
    from statecli.modeldef import KeyMatch, ModelSlot

    value = {"a": ModelSlot("a", Kind.BUFFER_NP, "float32", (2, 3)), "b": [(1, "x"), None, 1.5, True],
             "c": KeyMatch(("t",), "how")}
    back = cache.decode(json.loads(json.dumps(cache.encode(value))))
    assert back == value and type(back["a"].kind) is Kind and isinstance(back["b"][0], tuple)
    with pytest.raises(cache.Unencodable):
        cache.encode({"x": object()})
    with pytest.raises(cache.Unencodable):
        cache.encode({1: "non-str key"})


def test_hit_imports_neither_torch_nor_transformers(folder: Path, cache_dir: Path) -> None:
    run(folder)  # stores what the CLI will look up
    probe = ("import sys, atexit\n"
             "atexit.register(lambda: sys.stderr.write('HEAVY=' + ','.join(sorted(m for m in ('torch', "
             "'transformers') if m in sys.modules)) + '\\n'))\n"
             "from statecli.cli import main\nsys.argv = ['statecli', 'inspect', sys.argv[1], '--format', 'json']\n"
             "main()\n")
    env = dict(os.environ, STATECLI_CACHE_DIR=str(cache_dir))
    env.pop("STATECLI_NO_CACHE", None)
    out = subprocess.run([sys.executable, "-c", probe, str(folder)], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert "HEAVY=\n" in out.stderr, out.stderr
    assert "cached description" in out.stderr
    assert json.loads(out.stdout)["model"]["loader"] == "from_pretrained"


def test_build_prunes_least_recently_used(folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 8)
    cache_dir.mkdir()
    for i in range(12):
        (cache_dir / f"old{i}.json").write_text("{}")
        os.utime(cache_dir / f"old{i}.json", (1_000_000 + i, 1_000_000 + i))
    run(folder)
    left = {p.name for p in cache_dir.glob("old*.json")}
    assert left == {f"old{i}.json" for i in range(6, 12)}  # 12 > 8: pruned to 6 before writing
    assert "cached description" in run(folder)[1][0]

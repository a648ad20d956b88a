"""Classification against a model definition, checked against torch's own named_parameters,
named_buffers, _non_persistent_buffers_set and load_state_dict."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.classify import with_model
from statecli.cli import app
from statecli.load import load_checkpoint
from statecli.modeldef import build_model, load_report, parse_model_args

runner = CliRunner()

MODEL_SRC = textwrap.dedent('''
    import torch

    class Block(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.lin = torch.nn.Linear(dim, dim)
            self.norm = torch.nn.BatchNorm1d(dim)
            self.register_buffer("inv_freq", torch.ones(dim // 2), persistent=False)

    class Net(torch.nn.Module):
        def __init__(self, vocab=12, dim=4, layers=2):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, dim)
            self.register_buffer("position_ids", torch.arange(8).unsqueeze(0), persistent=False)
            self.register_buffer("causal", torch.ones(8, 8, dtype=torch.bool))
            self.blocks = torch.nn.ModuleList(Block(dim) for _ in range(layers))
            self.head = torch.nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.emb.weight
            self.scale = torch.tensor(2.0)  # a plain attribute: neither parameter nor buffer

    def make_huge():
        return torch.nn.Sequential(*[torch.nn.Linear(40_000, 40_000) for _ in range(4)])
''')


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "defs.py"
    path.write_text(MODEL_SRC)
    return path


def _reference(model_file: Path) -> torch.nn.Module:
    ns: dict = {}
    exec(compile(MODEL_SRC, str(model_file), "exec"), ns)  # the test's own trusted code
    torch.manual_seed(0)
    return ns["Net"]()


def test_classification_matches_torch(tmp_path: Path, model_file: Path) -> None:
    ref = _reference(model_file)
    sd = ref.state_dict()
    torch.save(sd, tmp_path / "ck.pt")
    ck = load_checkpoint(str(tmp_path / "ck.pt"))
    info = build_model(f"{model_file}:Net", {})
    ck = with_model(ck, info)
    kinds = {e.name: e.kind for e in ck.entries}
    params = {n for n, _ in ref.named_parameters(remove_duplicate=False)}
    nonpersistent = {f"{m}.{b}" if m else b for m, mod in ref.named_modules() for b in mod._non_persistent_buffers_set}
    buffers = {n for n, _ in ref.named_buffers()} - nonpersistent
    assert set(kinds) == set(sd)
    for name, kind in kinds.items():
        expected = "parameter" if name in params else "buffer" if name in buffers else None
        assert kind == expected, name
    assert all(str(e.evidence) == "model definition" for e in ck.entries)
    assert "scale" not in info.slots  # a plain tensor attribute is not state
    assert {k for k, s in info.slots.items() if s.kind == "buffer (non-persistent)"} == nonpersistent


def test_load_report_matches_load_state_dict(tmp_path: Path, model_file: Path) -> None:
    ref = _reference(model_file)
    sd = dict(ref.state_dict())
    sd["position_ids"] = torch.arange(8).unsqueeze(0)  # an old library version saved it
    del sd["head.weight"]  # tied: saved once
    sd["blocks.0.lin.weight"] = torch.zeros(3, 4)  # shape mismatch
    sd["extra.thing"] = torch.zeros(1)
    torch.save(sd, tmp_path / "ck.pt")
    ck = load_checkpoint(str(tmp_path / "ck.pt"))
    info = build_model(f"{model_file}:Net", {})
    ck = with_model(ck, info)
    lines = load_report(ck, info)
    probe = dict(sd)
    probe["blocks.0.lin.weight"] = torch.zeros(4, 4)
    result = _reference(model_file).load_state_dict(probe, strict=False)
    assert sorted(x.key for x in lines if x.problem == "missing") == sorted(result.missing_keys)
    assert sorted(x.key for x in lines if x.problem == "unexpected") == sorted(result.unexpected_keys)
    by = {(x.key, x.problem): x for x in lines}
    assert "non-persistent" in by[("position_ids", "unexpected")].explanation
    assert "safe to drop" in (by[("position_ids", "unexpected")].fix or "")
    assert "tied to emb.weight" in by[("head.weight", "missing")].explanation
    assert "[3, 4]" in by[("blocks.0.lin.weight", "shape mismatch")].explanation
    with pytest.raises(RuntimeError):
        _reference(model_file).load_state_dict(sd, strict=True)


def test_prefix_mismatch_suggests_fix(tmp_path: Path, model_file: Path) -> None:
    ref = _reference(model_file)
    torch.save({"_orig_mod." + k: v for k, v in ref.state_dict().items()}, tmp_path / "c.pt")
    result = runner.invoke(app, ["inspect", str(tmp_path / "c.pt"), "--model", f"{model_file}:Net", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert not data["loads_strictly"]
    assert {x["fix"] for x in data["load_report"]} == {"--strip-prefix _orig_mod."}
    ok = runner.invoke(app, ["inspect", str(tmp_path / "c.pt"), "--model", f"{model_file}:Net", "--format", "json",
                             "--strip-prefix", "_orig_mod."])
    assert ok.exit_code == 0, ok.stdout
    assert json.loads(ok.stdout)["loads_strictly"]
    torch.save({k.removeprefix("blocks."): v for k, v in ref.state_dict().items()}, tmp_path / "d.pt")
    d = runner.invoke(app, ["inspect", str(tmp_path / "d.pt"), "--model", f"{model_file}:Net", "--format", "json"])
    fixes = {x["fix"] for x in json.loads(d.stdout)["load_report"] if x["key"].startswith(("0.", "blocks.0"))}
    assert fixes == {"--add-prefix blocks."}


def test_model_args_and_tree(tmp_path: Path, model_file: Path) -> None:
    ns: dict = {}
    exec(compile(MODEL_SRC, str(model_file), "exec"), ns)
    torch.save(ns["Net"](vocab=20, layers=1).state_dict(), tmp_path / "v.pt")
    bad = runner.invoke(app, ["inspect", str(tmp_path / "v.pt"), "--model", f"{model_file}:Net"])
    assert bad.exit_code == 1 and "shape mismatch" in bad.stdout
    good = runner.invoke(app, ["inspect", str(tmp_path / "v.pt"), "--model", f"{model_file}:Net", "--model-arg",
                               "vocab=20", "--model-kwargs", '{"layers": 1}', "--tree"])
    assert good.exit_code == 0, good.stdout
    assert "Block" in good.stdout and "BatchNorm1d" in good.stdout and "not saved" in good.stdout
    assert parse_model_args(["a=1", "b=hello", "c=[1, 2]"], '{"d": true}') == {"a": 1, "b": "hello", "c": [1, 2], "d": True}


def test_meta_build_allocates_nothing(model_file: Path) -> None:
    """Four 40k x 40k Linear layers would need 25.6 GB of float32: more than this machine has."""
    info = build_model(f"{model_file}:make_huge", {})
    assert info.built_on == "meta"
    assert info.slots["0.weight"].shape == (40_000, 40_000)


def test_bad_model_spec_is_one_line(tmp_path: Path, model_file: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    for spec in ("nofile.py:Net", f"{model_file}:Missing", "no_colon", "json:dumps"):
        result = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--model", spec])
        assert result.exit_code == 2, (spec, result.output)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_hugging_face_bert(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(tmp_path / "bert")  # config.json beside the checkpoint, no weights
    sd = model.state_dict()
    sd["bert.embeddings.position_ids"] = torch.arange(16).unsqueeze(0)  # what older transformers saved
    torch.save(sd, tmp_path / "bert" / "pytorch_model.bin")
    result = runner.invoke(app, ["inspect", str(tmp_path / "bert"), "--format", "json"])
    data = json.loads(result.stdout)
    assert data["model"]["class"] == "BertForMaskedLM"
    kinds = {e["name"]: e["kind"] for e in data["entries"]}
    assert kinds["bert.embeddings.position_ids"] == "buffer (non-persistent)"
    assert kinds["bert.embeddings.word_embeddings.weight"] == "parameter"
    lines = {x["key"]: x for x in data["load_report"]}
    assert "non-persistent" in lines["bert.embeddings.position_ids"]["explanation"]


def test_hf_config_without_transformers_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    result = runner.invoke(app, ["inspect", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0
    assert any("torch-statecli[hf]" in n for n in json.loads(result.stdout)["notes"])


def test_hugging_face_documented_renames(tmp_path: Path) -> None:
    """An old BERT checkpoint with LayerNorm.gamma/beta, and a base model saved without the 'bert.'
    prefix: both differ from the model only by renames transformers applies on load."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, architectures=["BertForMaskedLM"])
    config.save_pretrained(tmp_path)
    sd = transformers.BertForMaskedLM(config).state_dict()
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in sd.items()}
    torch.save(old, tmp_path / "pytorch_model.bin")
    result = runner.invoke(app, ["inspect", str(tmp_path), "--format", "json"])
    data = json.loads(result.stdout)
    renamed = [x for x in data["load_report"] if x["problem"] == "renamed"]
    gammas = [k for k in old if k.endswith("LayerNorm.gamma")]
    gamma = [x for x in renamed if any(k.endswith("gamma") for k in x["keys"])]
    assert len(gamma) == 1 and sorted(gamma[0]["keys"]) == sorted(gammas)  # one line per rename rule
    assert gamma[0]["key"] == f"({len(gammas)} keys)" and "'gamma' -> 'weight'" in gamma[0]["explanation"]
    assert "LayerNorm.weight" in gamma[0]["explanation"] and len(renamed) == 2  # gamma and beta
    assert not any(x["problem"] == "missing" and "LayerNorm" in x["key"] for x in data["load_report"])
    base = {k.removeprefix("bert."): v for k, v in sd.items() if k.startswith("bert.")}
    torch.save(base, tmp_path / "pytorch_model.bin")
    data = json.loads(runner.invoke(app, ["inspect", str(tmp_path), "--format", "json"]).stdout)
    prefixed = [x for x in data["load_report"] if x["problem"] == "renamed"]
    assert len(prefixed) == 1 and "base-model prefix" in prefixed[0]["explanation"]
    assert len(prefixed[0]["keys"]) == len(base)


def test_meta_build_failure_falls_back_to_cpu_with_warning(tmp_path: Path) -> None:
    src = tmp_path / "cpu_only.py"
    src.write_text("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                   "        self.lin = torch.nn.Linear(2, 2)\n"
                   "        float(self.lin.weight.sum())  # needs real values: fails on the meta device\n")
    torch.save({"lin.weight": torch.zeros(2, 2), "lin.bias": torch.zeros(2)}, tmp_path / "w.pt")
    result = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--model", f"{src}:Net", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["built_on"] == "cpu"
    assert any("meta device" in w for w in data["warnings"])
    assert {e["kind"] for e in data["entries"]} == {"parameter"}


def test_unusable_config_json_is_ignored(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1}))
    result = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--format", "json"])
    assert result.exit_code == 0 and "model" not in json.loads(result.stdout)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchArchitecture"]}))
    result = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--format", "json"])
    data = json.loads(result.stdout)
    if importlib.util.find_spec("transformers") is not None:
        assert result.exit_code == 0 and any("ignored" in n for n in data["notes"])
    explicit = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--hf-config", str(tmp_path / "config.json")])
    assert explicit.exit_code == 2
    skipped = runner.invoke(app, ["inspect", str(tmp_path / "w.pt"), "--no-hf-config", "--format", "json"])
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["notes"] == []

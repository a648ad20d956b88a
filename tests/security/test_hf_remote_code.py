"""A Hugging Face config.json whose auto_map names the folder's own Python (configuration_*.py,
modeling_*.py): transformers imports that code when trusted, and asks on the terminal when not told.
statecli never asks and never imports it (trust_remote_code=False); it names the code files (scan:
needs trust, exit 1; the classifying commands: one note) and classifies without the custom class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from statecli.formats.hfconfig import config_code  # noqa: E402

from .. import warm  # noqa: E402

PROMPT = "Do you wish to run the custom code"
TINY_LLAMA = {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 32, "torch_dtype": "float32"}


def _folder(tmp: Path, *, model_type: bool, arch: str = "XForCausalLM") -> tuple[Path, Path]:
    """A model folder whose config's auto_map points at code that writes a canary file on import."""
    folder, canary = tmp / "model", tmp / "canary"
    folder.mkdir()
    config = dict(TINY_LLAMA) if model_type else {"hidden_size": 8}
    config |= {"architectures": [arch], "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                                      "AutoModelForCausalLM": "modeling_x.XForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))
    payload = f"import pathlib\npathlib.Path({str(canary)!r}).write_text('ran')\n"
    (folder / "configuration_x.py").write_text(payload + "from transformers import PretrainedConfig\n"
                                               "class XConfig(PretrainedConfig):\n    model_type = 'x'\n")
    (folder / "modeling_x.py").write_text(payload)
    save_file({"model.embed_tokens.weight": torch.zeros(32, 8), "lm_head.weight": torch.ones(32, 8)},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder, canary


def _statecli(tmp: Path, *args: str) -> warm.Ran:
    """statecli with stdin a file that answers yes to any question, as a user at a terminal might (a process
    forked from an interpreter that has imported transformers: tests/warm.py)."""
    env = os.environ | {"STATECLI_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
                        "HF_HOME": str(tmp / "hf")}
    return warm.run(list(args), input="y\n" * 8, kind="hf", env=env, cwd=tmp, timeout=300)


def test_the_canary_fires_when_transformers_trusts_the_folder(tmp_path: Path) -> None:
    folder, canary = _folder(tmp_path, model_type=False)
    code = ("import sys, transformers\n"
            "transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)")
    subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, timeout=300,
                   env=os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert canary.exists()


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "XForCausalLM"])  # a class transformers has, or the custom one
@pytest.mark.parametrize("model_type", [True, False], ids=["with-model_type", "auto_map-only"])
def test_no_command_prompts_or_imports_the_folders_code(tmp_path: Path, model_type: bool, arch: str) -> None:
    folder, canary = _folder(tmp_path, model_type=model_type, arch=arch)
    weights = str(folder / "model.safetensors")
    expected = {("inspect", weights): 0, ("inspect", str(folder)): 0, ("size", str(folder)): 0,
                ("check", str(folder)): 1, ("scan", str(folder)): 1, ("scan", weights): 1,
                ("cast", weights, "--dtype", "half", "-o", str(tmp_path / "out.safetensors")): 0,
                ("cast", str(folder), "--dtype", "half", "-o", str(tmp_path / "out")): 0}
    for args, code in expected.items():
        run = _statecli(tmp_path, *args)
        assert PROMPT not in run.stdout + run.stderr, args
        assert "Traceback" not in run.stderr, (args, run.stderr)
        assert not canary.exists(), args
        assert run.returncode == code, (args, run.stdout, run.stderr)
        if args[0] in ("inspect", "scan"):  # both name the code the config would import
            assert "configuration_x.py" in run.stdout + run.stderr, args
            assert "modeling_x.py" in run.stdout + run.stderr, args


def test_inspect_says_once_how_it_classified(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, model_type=False, arch="LlamaForCausalLM")
    run = _statecli(tmp_path, "inspect", str(folder / "model.safetensors"), "--format", "json")
    notes = [n for n in json.loads(run.stdout)["notes"] if "auto_map" in n]
    assert len(notes) == 1 and "inference" in notes[0] and "never runs it" in notes[0]


def test_a_standard_model_type_classifies_against_the_standard_class(tmp_path: Path) -> None:
    folder, canary = _folder(tmp_path, model_type=True, arch="LlamaForCausalLM")
    run = _statecli(tmp_path, "inspect", str(folder), "--format", "json")
    assert run.returncode == 0, run.stderr
    notes = [n for n in json.loads(run.stdout)["notes"] if "auto_map" in n]
    assert len(notes) == 1 and "LlamaForCausalLM" in notes[0]
    assert not canary.exists()


def test_scan_json_names_the_code_files(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, model_type=True)
    run = _statecli(tmp_path, "scan", str(folder / "model.safetensors"), "--format", "json")
    files = json.loads(run.stdout)["files"]
    config = [f for f in files if f["path"].endswith("config.json")]
    assert len(config) == 1 and config[0]["verdict"] == "needs-trust" and config[0]["counted"]
    assert {g["name"] for g in config[0]["globals"]} == {"auto_map: configuration_x.py", "auto_map: modeling_x.py"}


def test_config_code_resolves_modules_to_the_folders_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mod.py").write_text("")
    (tmp_path / "tokenization_t.py").write_text("")
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {
        "AutoModel": "sub.mod.M", "AutoTokenizer": ["tokenization_t.T", None],
        "AutoConfig": "org/repo--configuration_r.R", "AutoProcessor": "...escape.P"}}))
    code = config_code(str(tmp_path / "config.json"))
    assert code is not None and code.model_type is None
    assert code.files == ("sub/mod.py", "tokenization_t.py")
    assert set(code.absent) == {"org/repo--configuration_r", "...escape"}


@pytest.mark.parametrize("auto_map", [None, {}], ids=["none", "empty"])
def test_a_config_without_auto_map_names_no_code(tmp_path: Path, auto_map: object) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama"} | ({} if auto_map is None else {"auto_map": auto_map})))
    assert config_code(str(cfg)) is None


def test_hf_config_option_refuses_a_config_only_its_code_can_build(tmp_path: Path) -> None:
    folder, canary = _folder(tmp_path, model_type=False, arch="LlamaForCausalLM")
    run = _statecli(tmp_path, "inspect", str(folder / "model.safetensors"), "--hf-config", str(folder / "config.json"))
    assert run.returncode == 2 and "never runs" in run.stderr and "configuration_x.py" in run.stderr, run.stderr
    assert PROMPT not in run.stdout + run.stderr and "Traceback" not in run.stderr
    assert not canary.exists()

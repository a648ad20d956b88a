"""`check` reads a folder as `scan` does: a config.json whose auto_map names code fails the safe-pickle
rule, and every file beside a folder checkpoint's loaded files (training_args.bin, extra_state.pt, a
pickle without a checkpoint suffix) gets the safe-pickle rule, failing it (exit 1) when not safe, never
a read error. Payloads here are never run: each names os.system on a command that would touch a canary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app

from .test_folder_scan import TrainingArguments, _payload

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

runner = CliRunner()


def _check(*args: str) -> tuple[int, dict[str, list[dict[str, object]]]]:
    result = runner.invoke(app, ["check", *args, "--format", "json"])
    rows: dict[str, list[dict[str, object]]] = {}
    for f in json.loads(result.stdout)["findings"]:
        rows.setdefault(Path(str(f["path"])).name, []).append(f)
    return result.exit_code, rows


def _weights(folder: Path) -> Path:
    folder.mkdir()
    save_file({"w": torch.ones(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_a_config_naming_code_fails_the_gate_on_the_folder_and_on_its_weights_file(tmp_path: Path) -> None:
    folder = _weights(tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}))
    (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'canary')!r}, 'w')\n")
    for target in (folder, folder / "model.safetensors"):
        code, rows = _check(str(target))
        assert code == 1, rows
        (config,) = rows["config.json"]
        assert config["rule"] == "safe-pickle" and not config["passed"] and "modeling_evil.py" in str(config["reason"])
        assert str(config["reason"]).startswith("needs-trust")
        assert all(f["passed"] for f in rows["model.safetensors"])
    assert not (tmp_path / "canary").exists()


def test_a_clean_trainer_folder_lists_training_args_as_needing_trust_not_as_unreadable(tmp_path: Path) -> None:
    folder = _weights(tmp_path / "checkpoint-10")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    torch.save(TrainingArguments(), folder / "training_args.bin")
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, folder / "optimizer.pt")
    result = runner.invoke(app, ["check", str(folder), "--format", "json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and not doc.get("errors"), doc
    rows = {Path(str(f["path"])).name: f for f in doc["findings"]}
    assert not rows["training_args.bin"]["passed"] and "needs-trust" in str(rows["training_args.bin"]["reason"])
    assert rows["optimizer.pt"]["passed"] and rows["model.safetensors"]["passed"]


@pytest.mark.parametrize("layout", ["dcp", "hf"])
def test_a_payload_beside_the_checkpoint_fails_the_gate(tmp_path: Path, layout: str) -> None:
    canary = tmp_path / "canary"
    if layout == "dcp":
        import torch.distributed.checkpoint as dcp

        folder = tmp_path / "dcp"
        dcp.save({"w": torch.ones(3)}, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=True)
        beside = {"extra_state.pt": _payload(canary)}
    else:
        folder = _weights(tmp_path / "hf")
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        beside = {"trainer_state.dat": _payload(canary), "rng_state.pth": _payload(canary)}
    for name, data in beside.items():
        (folder / name).write_bytes(data)
    code, rows = _check(str(folder))
    assert code == 1, rows
    for name in beside:
        (row,) = rows[name]
        assert not row["passed"] and "dangerous" in str(row["reason"]) and ".system" in str(row["reason"]), row
    assert not canary.exists()


def test_without_the_safe_pickle_rule_files_beside_are_not_gated(tmp_path: Path) -> None:
    folder = _weights(tmp_path / "hf")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "rng_state.pth").write_bytes(_payload(tmp_path / "canary"))
    code, rows = _check(str(folder), "--no-safe-pickle")
    assert code == 0 and "rng_state.pth" not in rows, rows

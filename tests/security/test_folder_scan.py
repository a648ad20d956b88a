"""A folder checkpoint is scanned whole: every file of a DCP or Hugging Face folder that a loader of
that layout may be asked to read is listed with its own verdict. Only the files the layout's default
loader reads (weights, index, shards, config, DCP items) set the exit code; the others count with
--strict. Payloads here are never run: each names os.system on a command that would touch a canary."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

runner = CliRunner()


class TrainingArguments:
    """Stands for transformers' TrainingArguments: a user class pickled whole by the Trainer."""

    def __init__(self) -> None:
        self.lr = 1e-3


def _payload(canary: Path) -> bytes:
    """A protocol-2 pickle calling os.system (never loaded here)."""
    return b"\x80\x02cposix\nsystem\nq\x00X" + len(f"touch {canary}").to_bytes(4, "little") + \
        f"touch {canary}".encode() + b"\x85R."


def _scan(*args: str) -> tuple[int, dict[str, dict[str, object]]]:
    result = runner.invoke(app, ["scan", *args, "--format", "json"])
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    return result.exit_code, files


def _trainer_folder(tmp: Path) -> Path:
    """What transformers' Trainer writes to checkpoint-N/, with a payload in files beside the weights."""
    folder = tmp / "checkpoint-500"
    folder.mkdir()
    save_file({"w": torch.ones(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "trainer_state.json").write_text("{}")
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, folder / "optimizer.pt")
    torch.save(TrainingArguments(), folder / "training_args.bin")
    (folder / "rng_state.pth").write_bytes(_payload(tmp / "canary"))
    (folder / "extra.pkl").write_bytes(_payload(tmp / "canary"))
    (folder / "pytorch_model.bin").write_bytes(_payload(tmp / "canary"))  # *.bin beside the safetensors
    (folder / "rng_state_1").write_bytes(_payload(tmp / "canary"))  # no suffix, but its bytes are a pickle
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello sentencepiece")  # not a checkpoint: not listed
    return folder


def test_every_file_of_a_trainer_folder_is_listed_with_its_verdict(tmp_path: Path) -> None:
    code, files = _scan(str(_trainer_folder(tmp_path)))
    assert files["model.safetensors"]["role"] == "loaded" and files["model.safetensors"]["counted"]
    beside = {n: f["verdict"] for n, f in files.items() if f["role"] == "beside"}
    assert beside == {"optimizer.pt": "safe", "training_args.bin": "needs-trust", "rng_state.pth": "dangerous",
                      "extra.pkl": "dangerous", "pytorch_model.bin": "dangerous", "rng_state_1": "dangerous"}
    assert not any(f["counted"] for n, f in files.items() if n in beside)
    assert code == 0  # from_pretrained reads model.safetensors and config.json, both safe
    assert not (tmp_path / "canary").exists()


def test_strict_counts_the_files_beside(tmp_path: Path) -> None:
    folder = _trainer_folder(tmp_path)
    code, files = _scan(str(folder), "--strict")
    assert code == 3 and all(f["counted"] for f in files.values())
    for name in ("rng_state.pth", "extra.pkl", "pytorch_model.bin", "rng_state_1"):
        (folder / name).unlink()
    assert _scan(str(folder), "--strict")[0] == 1  # training_args.bin: a pickled user class needs trust


def test_the_table_marks_the_files_beside(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scan", str(_trainer_folder(tmp_path))])
    line = next(ln for ln in result.stdout.splitlines() if "rng_state.pth" in ln)
    assert "dangerous" in line and "--strict" in line


def test_a_payload_in_the_loaded_weights_still_sets_the_exit_code(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(_payload(tmp_path / "canary"))  # the only weights: loaded
    torch.save({"step": 1}, folder / "scheduler.pt")
    code, files = _scan(str(folder))
    assert code == 3 and files["pytorch_model.bin"]["role"] == "loaded"
    assert files["scheduler.pt"]["role"] == "beside" and files["scheduler.pt"]["verdict"] == "safe"


def test_a_sharded_folder_lists_its_other_files_not_its_shards(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({"a": torch.ones(2)}, str(folder / "model-00001-of-00001.safetensors"), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    (folder / "extra_state.pt").write_bytes(_payload(tmp_path / "canary"))
    code, files = _scan(str(folder))
    assert set(files) == {"model.safetensors.index.json", "extra_state.pt"}
    assert code == 0 and files["extra_state.pt"]["verdict"] == "dangerous"


def test_a_dcp_folder_lists_the_files_beside_its_items(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "dcp"
    dcp.save({"w": torch.ones(2, 2)}, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=True)
    (folder / "extra_state.pt").write_bytes(_payload(tmp_path / "canary"))
    (folder / "sub").mkdir()
    (folder / "sub" / "rng.pkl").write_bytes(_payload(tmp_path / "canary"))
    code, files = _scan(str(folder))
    assert files["dcp"]["role"] == "loaded" and files["dcp"]["format"] == "torch.distributed.checkpoint"
    assert {n: (f["role"], f["verdict"]) for n, f in files.items() if n != "dcp"} == {
        "extra_state.pt": ("beside", "dangerous"), "rng.pkl": ("beside", "dangerous")}
    assert code == 0
    assert _scan(str(folder), "--strict")[0] == 3


def test_a_folder_of_independent_checkpoints_counts_each(tmp_path: Path) -> None:
    """No config, index or .metadata: every checkpoint file is its own, loaded on its own (as before)."""
    torch.save({"w": torch.ones(1)}, tmp_path / "a.pt")
    (tmp_path / "b.pt").write_bytes(_payload(tmp_path / "canary"))
    code, files = _scan(str(tmp_path))
    assert code == 3 and files["b.pt"]["role"] == "loaded"


def test_a_named_file_scans_only_that_file(tmp_path: Path) -> None:
    folder = _trainer_folder(tmp_path)
    code, files = _scan(str(folder / "model.safetensors"))
    assert code == 0 and set(files) == {"model.safetensors"}


def test_pickled_user_class_is_the_canary_under_the_ordinary_loader(tmp_path: Path) -> None:
    """The rng_state payload runs under pickle.load, so the scan above judged a real payload."""
    import subprocess
    import sys

    path = tmp_path / "p.pkl"
    path.write_bytes(_payload(tmp_path / "canary"))
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))", str(path)],
                   capture_output=True, timeout=60)
    assert (tmp_path / "canary").exists()
    assert pickle.dumps(TrainingArguments())  # the fixture's user class pickles by reference

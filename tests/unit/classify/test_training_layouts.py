"""Training layouts recognised and labelled: a PyTorch Lightning .ckpt, a PEFT adapter (built by hand
in PEFT's saved layout), an accelerate save_state folder (files as accelerate writes them)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from statecli.load import load_checkpoint  # noqa: E402
from statecli.state import Kind, Role  # noqa: E402


def _net() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    return net, opt, torch.optim.lr_scheduler.StepLR(opt, 10)


def test_lightning_ckpt(tmp_path: Path) -> None:
    net, opt, sched = _net()
    ckpt = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5),
                                                                     "best_model_path": "x.ckpt"}},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],  # type: ignore[attr-defined]
            "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3, "hidden": 8}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    ck = load_checkpoint(str(tmp_path / "last.ckpt"))
    assert ck.container == "state_dict"
    truth = {f"model.{n}": Kind.PARAMETER for n, _ in net.named_parameters()}
    truth |= {f"model.{n}": Kind.BUFFER for n, _ in net.named_buffers()}
    assert {e.name: e.kind for e in ck.entries if e.group == ""} == truth
    roles = {c.name: c.role for c in ck.containers}
    assert roles["optimizer_states"] == Role.OPTIMIZER and roles["lr_schedulers"] == Role.SCHEDULER  # issue 21
    assert roles["callbacks"] == roles["loops"] == roles["hyper_parameters"] == Role.METADATA
    kinds = {e.group: e.kind for e in ck.entries if e.group and e.tensor is not None}
    assert kinds == {"optimizer_states": Kind.OPTIMIZER, "callbacks": Kind.METADATA}
    assert any("PyTorch Lightning" in n and "epoch 3" in n and "global_step 120" in n for n in ck.notes)


def test_peft_adapter(tmp_path: Path) -> None:
    r = 8
    tensors = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            base = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{base}.lora_A.weight"] = torch.randn(r, 16)
            tensors[f"{base}.lora_B.weight"] = torch.zeros(16, r)
    tensors["base_model.model.score.weight"] = torch.randn(3, 16)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
              "modules_to_save": ["score"], "base_model_name_or_path": "tiny-llama", "task_type": "CAUSAL_LM"}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    for path in (tmp_path, tmp_path / "adapter_model.safetensors"):
        ck = load_checkpoint(str(path))
        assert {e.kind for e in ck.entries} == {Kind.PARAMETER}
        evidence = {e.name: e.evidence.detail for e in ck.entries}
        assert evidence["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] == "PEFT adapter (target q_proj, r=8)"
        assert evidence["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"] == "PEFT adapter (target v_proj, r=8)"
        assert evidence["base_model.model.score.weight"] == "PEFT adapter (modules_to_save score)"
        assert any("LORA adapter for tiny-llama" in n and "targets q_proj, v_proj" in n for n in ck.notes)
    config["target_modules"] = r".*\.(q_proj|v_proj)"  # a regex over the base model's module names
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    ck = load_checkpoint(str(tmp_path))
    assert sum("target q_proj" in e.evidence.detail for e in ck.entries) == 4


def test_accelerate_save_state_folder(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    net, opt, sched = _net()
    folder = tmp_path / "checkpoint_0"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    torch.save(opt.state_dict(), folder / "optimizer.bin")
    torch.save(sched.state_dict(), folder / "scheduler.bin")  # type: ignore[attr-defined]
    torch.save({"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, folder / "random_states_0.pkl")
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}  # torch.amp.GradScaler("cuda").state_dict()
    torch.save(scaler, folder / "scaler.pt")
    ck = load_checkpoint(str(folder))
    assert ck.path.endswith("model.safetensors") and len(ck.entries) == 5 + 4
    note = next(n for n in ck.notes if "accelerate save_state folder" in n)
    for part in ("optimizer.bin (optimizer state)", "scheduler.bin (lr scheduler state)",
                 "random_states_0.pkl (RNG state)", "scaler.pt (GradScaler state)", "model.safetensors (model state)"):
        assert part in note
    expect = {"optimizer.bin": (Role.OPTIMIZER, Kind.OPTIMIZER), "scheduler.bin": (Role.SCHEDULER, None),
              "random_states_0.pkl": (Role.METADATA, Kind.METADATA), "scaler.pt": (Role.OPTIMIZER, None)}
    for name, (role, kind) in expect.items():
        ck = load_checkpoint(str(folder / name))
        assert [c.role for c in ck.containers] == [role], name
        assert {e.kind for e in ck.entries if e.tensor is not None} == ({kind} if kind else set()), name
        assert {e.kind for e in ck.entries if e.tensor is None} <= {Kind.METADATA}, name
        assert any(f"{name} of an accelerate save_state folder" in n for n in ck.notes), name


def test_accelerate_bin_model(tmp_path: Path) -> None:
    net, opt, _ = _net()
    torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")
    torch.save(opt.state_dict(), tmp_path / "optimizer.bin")
    torch.save({"random_state": random.getstate(), "numpy_random_seed": None, "torch_manual_seed": torch.get_rng_state()},
               tmp_path / "random_states_0.pkl")
    ck = load_checkpoint(str(tmp_path))
    assert ck.path.endswith("pytorch_model.bin")
    assert any("pytorch_model.bin (model state)" in n for n in ck.notes)
    assert {e.kind for e in ck.entries} == {Kind.PARAMETER, Kind.BUFFER}

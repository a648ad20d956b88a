"""Name/dtype inference, container roles and the root layouts that are not a model state; built from
TensorInfo values and small torch.save files, checked against what torch says each entry is."""

from __future__ import annotations

from pathlib import Path

import pytest

from statecli import classify
from statecli.state import Checkpoint, Entry, Kind, ModuleNode, Role, Source, TensorInfo


def t(dtype: str = "float32", shape: tuple[int, ...] = (4,)) -> TensorInfo:
    return TensorInfo(dtype=dtype, shape=shape)


@pytest.mark.parametrize(("name", "tensor", "kind"), [
    ("bn.running_mean", t(), Kind.BUFFER),
    ("bn.num_batches_tracked", t("int64", ()), Kind.BUFFER),
    ("emb.position_ids", t("int64"), Kind.BUFFER),
    ("rotary.inv_freq", t(), Kind.BUFFER),
    ("final_logits_bias", t(shape=(1, 8)), Kind.BUFFER),  # BART: a persistent buffer, not a parameter
    ("wav2vec2.masked_spec_embed", t(), Kind.PARAMETER),  # float: learned, whatever its name says
    ("h.0.attn.bias", t("bool", (1, 1, 4, 4)), Kind.BUFFER),
    ("h.0.attn.masked_bias", t(shape=()), Kind.BUFFER),  # GPT-2's legacy float mask value
    ("causal_mask", t("uint8", (4, 4)), Kind.BUFFER),
    ("rng_state", t("uint8", (5056,)), Kind.METADATA),
    ("cuda_rng_state.0", t("uint8", (16,)), Kind.METADATA),
    ("fc.weight", t(), Kind.PARAMETER),
])
def test_inference_rules(name: str, tensor: TensorInfo, kind: Kind) -> None:
    got, evidence = classify.infer(name, tensor)
    assert got == kind
    assert evidence.inferred


def test_values_and_pickled_parameters() -> None:
    assert classify.infer("epoch", None)[0] == Kind.METADATA
    param = TensorInfo("float32", (2,), is_parameter_object=True)
    assert classify.infer("x", param)[1].source == Source.PICKLED_PARAMETER


@pytest.mark.parametrize(("name", "state_dict", "tensors", "role", "kind"), [
    ("optimizer", False, True, Role.OPTIMIZER, Kind.OPTIMIZER),
    ("lr_scheduler", False, False, Role.SCHEDULER, Kind.METADATA),  # not "optimizer" (issue 21)
    ("model_ema", True, True, Role.EMA, None),
    ("rng_state", False, True, Role.METADATA, Kind.METADATA),
    ("discriminator", True, True, Role.OTHER_STATE, None),
    ("loss_history", False, True, Role.OTHER, Kind.UNKNOWN),
    ("epoch", False, False, Role.METADATA, Kind.UNKNOWN),
])
def test_container_roles(name: str, state_dict: bool, tensors: bool, role: Role, kind: Kind | None) -> None:
    assert classify.container_role(name, state_dict=state_dict, tensors=tensors) == (role, kind)


def test_root_layouts() -> None:
    assert classify.root_role(["state", "param_groups"])[:2] == (Role.OPTIMIZER, Kind.OPTIMIZER)  # type: ignore[index]
    assert classify.root_role(["python", "numpy", "cpu", "cuda"])[:2] == (Role.METADATA, Kind.METADATA)  # type: ignore[index]
    assert classify.root_role(["state", "param_groups", "fc.weight"]) is None


def test_pickled_module_kinds() -> None:
    assert classify.pickled("parameter")[0] == Kind.PARAMETER
    assert classify.pickled("buffer")[0] == Kind.BUFFER
    assert classify.pickled("buffer", non_persistent=True)[0] == Kind.BUFFER_NP
    assert classify.pickled("attribute")[0] == Kind.ATTRIBUTE
    assert classify.pickled("parameter")[1].exact


def test_bare_optimizer_state_dict_is_optimizer_state(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from statecli.load import load_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "optimizer.bin")
    ck = load_checkpoint(str(tmp_path / "optimizer.bin"))
    assert {e.kind for e in ck.entries if e.tensor is not None} == {Kind.OPTIMIZER}
    assert [c.role for c in ck.containers] == [Role.OPTIMIZER]


def test_rng_states_are_metadata(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from statecli.load import load_checkpoint

    torch.save({"python": (3, (1, 2), None), "numpy": ("MT19937", 1), "cpu": torch.get_rng_state()},
               tmp_path / "rng_state.pth")  # HF Trainer's layout
    ck = load_checkpoint(str(tmp_path / "rng_state.pth"))
    assert {e.kind for e in ck.entries} == {Kind.METADATA}
    torch.save({"model": {"w": torch.zeros(2)}, "rng_state": torch.get_rng_state()}, tmp_path / "train.pt")
    ck = load_checkpoint(str(tmp_path / "train.pt"))
    assert {e.name: e.kind for e in ck.entries} == {"w": Kind.PARAMETER, "rng_state": Kind.METADATA}


class _Info:
    """The part of modeldef.ModelInfo that with_model reads."""

    def __init__(self) -> None:
        from statecli.modeldef import ModelSlot

        self.slots = {"fc.weight": ModelSlot("fc.weight", Kind.PARAMETER, "float32", (2,)),
                      "bn.running_mean": ModelSlot("bn.running_mean", Kind.BUFFER, "float32", (2,))}
        self.modules = [ModuleNode("", "Net")]
        self.warnings = ["built on cpu"]

    def map_keys(self, names: list[str]) -> dict[str, object]:
        from statecli.modeldef import KeyMatch

        return {n: KeyMatch((n,)) for n in names if n in self.slots}


def test_with_model_returns_a_new_checkpoint() -> None:
    entries = [Entry("fc.weight", t(shape=(2,)), kind=Kind.PARAMETER),
               Entry("bn.running_mean", t("int64", (2,)), kind=Kind.BUFFER),
               Entry("extra", t(shape=(2,)), kind=Kind.PARAMETER),
               Entry("opt.x", t(), kind=Kind.OPTIMIZER, group="opt")]
    ck = Checkpoint(path="x.pt", format="torch zip", entries=list(entries), container="")
    out = classify.with_model(ck, _Info())  # type: ignore[arg-type]
    assert list(ck.entries) == entries and ck.warnings == [] and ck.modules == ()  # the input is untouched
    kinds = {e.name: (e.kind, e.evidence.source) for e in out.entries}
    assert kinds == {"fc.weight": (Kind.PARAMETER, Source.MODEL), "bn.running_mean": (Kind.BUFFER, Source.MODEL),
                     "extra": (Kind.UNKNOWN, Source.NOT_IN_MODEL), "opt.x": (Kind.OPTIMIZER, Source.NOT_TENSOR)}
    assert out.warnings == ["built on cpu"] and out.modules[0].class_name == "Net"

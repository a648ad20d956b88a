"""Load-report lines for real transformers models (tiny configs, saved by save_pretrained and edited):
a failed MoE expert fusion names the expert keys the file lacks (never transformers' traceback); tied
keys the file leaves out are re-tied by from_pretrained whichever tie member the file holds; a file
holding two tied names with different values loads untied. from_pretrained itself is the oracle."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from statecli.analyses.inspect import inspect  # noqa: E402
from statecli.load import load_checkpoint  # noqa: E402
from statecli.modeldef import build_hf_model  # noqa: E402
from statecli.vocab import ReportProblem  # noqa: E402


def report(folder: Path, name: str = "model.safetensors") -> list[Any]:
    info = build_hf_model(str(folder / "config.json"), use_cache=False)
    return list(inspect(load_checkpoint(str(folder / name)), model=info).load_report)


def edited(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of a save_pretrained folder whose model.safetensors went through `edit(state dict)`."""
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    sd = load_file(str(src / "model.safetensors"))
    edit(sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mixtral")
    config = T.MixtralConfig(vocab_size=64, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                             num_hidden_layers=1, max_position_embeddings=32, num_key_value_heads=1,
                             num_local_experts=4, num_experts_per_tok=2)
    T.MixtralForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("t5")
    config = T.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T.T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_failed_expert_fusion_names_the_missing_expert_key(mixtral: Path, tmp_path: Path) -> None:
    prefix = "model.layers.0.block_sparse_moe."
    folder = edited(mixtral, tmp_path / "m", lambda sd: sd.pop(prefix + "experts.2.w1.weight"))
    with pytest.raises(RuntimeError):  # the oracle: transformers cannot build the fused gate_up_proj
        T.MixtralForCausalLM.from_pretrained(folder)
    lines = report(folder)
    failed = [x for x in lines if x.problem is ReportProblem.CONVERSION_FAILED]
    assert [x.key for x in failed] == ["model.layers.0.mlp.experts.gate_up_proj"]
    assert prefix + "experts.2.w1.weight" in failed[0].explanation and failed[0].blocking
    assert not any("Traceback" in x.explanation for x in lines)
    # the fused entry is not also called "no file key found": one problem, one line
    assert [x.key for x in lines if x.blocking] == [failed[0].key]


def test_expert_stack_short_in_every_source_names_each_missing_key(mixtral: Path, tmp_path: Path) -> None:
    """w1 lacks expert 3 and w3 lacks expert 1: transformers stacks 3 of 4 experts and reports a size
    mismatch; the line names both keys the file lacks."""
    prefix = "model.layers.0.block_sparse_moe."
    drop = ["experts.1.w3.weight", "experts.3.w1.weight"]
    folder = edited(mixtral, tmp_path / "m", lambda sd: [sd.pop(prefix + k) for k in drop])
    _, info = T.MixtralForCausalLM.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    assert [k for k, *_ in info["mismatched_keys"]] == ["model.layers.0.mlp.experts.gate_up_proj"]  # the oracle
    lines = [x for x in report(folder) if x.blocking]
    assert [x.key for x in lines] == ["model.layers.0.mlp.experts.gate_up_proj"]
    assert all(prefix + k in lines[0].explanation for k in drop)


def _t5_keep(*names: str) -> Any:
    def edit(sd: dict[str, Any]) -> None:
        weight = sd.pop("shared.weight")
        sd.update({n: weight.clone() for n in names})
    return edit


@pytest.mark.parametrize("held", ["encoder.embed_tokens.weight", "lm_head.weight"])
def test_tied_keys_left_out_are_re_tied_whichever_member_the_file_holds(t5: Path, tmp_path: Path, held: str) -> None:
    folder = edited(t5, tmp_path / "t", _t5_keep(held))
    model, info = T.T5ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]  # the oracle: nothing missing, every name one Parameter again
    assert model.lm_head.weight is model.shared.weight is model.decoder.embed_tokens.weight
    lines = {x.key: x for x in report(folder)}
    tied = {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"} - {held}
    assert set(lines) == tied
    for x in lines.values():
        assert not x.blocking and "re-ties" in x.explanation and held in x.explanation
        assert "ignores" not in x.explanation


def test_both_tied_names_with_different_values_load_untied(t5: Path, tmp_path: Path) -> None:
    def edit(sd: dict[str, Any]) -> None:
        sd["lm_head.weight"] = sd["shared.weight"] + 1
    folder = edited(t5, tmp_path / "t", edit)
    model = T.T5ForConditionalGeneration.from_pretrained(folder)
    assert model.lm_head.weight is not model.shared.weight  # the oracle: from_pretrained left them untied
    lines = {x.key: x for x in report(folder)}
    untied = lines["lm_head.weight"]
    assert untied.problem is ReportProblem.UNTIED and not untied.blocking and not untied.fails_strict
    assert "shared.weight" in untied.explanation and "untied" in untied.explanation


def test_both_tied_names_sharing_storage_stay_tied(t5: Path, tmp_path: Path) -> None:
    """A torch .bin of a tied model holds every tied name on one storage: nothing to say, no value read."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(t5 / "config.json", folder / "config.json")
    model = T.T5ForConditionalGeneration.from_pretrained(t5)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert model.lm_head.weight is model.shared.weight
    assert not [x for x in report(folder, "pytorch_model.bin") if x.problem is ReportProblem.UNTIED]


def test_equal_values_under_both_tied_names_stay_tied(t5: Path, tmp_path: Path) -> None:
    folder = edited(t5, tmp_path / "t", lambda sd: sd.update({"lm_head.weight": sd["shared.weight"].clone()}))
    assert T.T5ForConditionalGeneration.from_pretrained(folder).lm_head.weight is not None
    assert not [x for x in report(folder) if x.problem is ReportProblem.UNTIED]


def test_a_cached_report_still_compares_the_values(t5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report cache is keyed by names, shapes and dtypes: two files alike in those but not in the
    tied values get their own answer, hit or miss."""
    monkeypatch.delenv("STATECLI_NO_CACHE", raising=False)
    monkeypatch.setenv("STATECLI_CACHE_DIR", str(tmp_path / "cache"))
    same = edited(t5, tmp_path / "same", lambda sd: sd.update({"lm_head.weight": sd["shared.weight"].clone()}))
    differ = edited(t5, tmp_path / "differ", lambda sd: sd.update({"lm_head.weight": sd["shared.weight"] + 1}))

    def untied(folder: Path) -> list[str]:
        info = build_hf_model(str(folder / "config.json"))
        lines = inspect(load_checkpoint(str(folder / "model.safetensors")), model=info).load_report
        return [x.key for x in lines if x.problem is ReportProblem.UNTIED]

    assert untied(same) == [] and untied(differ) == ["lm_head.weight"]
    assert untied(differ) == ["lm_head.weight"] and untied(same) == []  # now from the cache

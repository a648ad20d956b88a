"""Tiny random transformers models of many architectures, saved the ways people save them, classified
with and without their config.json; torch (named_parameters/named_buffers) and from_pretrained's own
loading report are the oracles."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from statecli import classify  # noqa: E402
from statecli.load import load_checkpoint  # noqa: E402
from statecli.modeldef import build_hf_model, load_report, model_for  # noqa: E402
from statecli.state import Kind  # noqa: E402

T = transformers
D = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
LM = {"vocab_size": 64, "num_hidden_layers": 1, "max_position_embeddings": 32}
# Classes by name: getattr(T, name) imports the modeling module, so only when a test builds the model
# (collection stays cheap on every pytest-xdist worker).
ARCHS: dict[str, tuple[str, Any]] = {
    "bert": ("BertForMaskedLM", lambda: T.BertConfig(**LM, **D)),
    "gpt2": ("GPT2LMHeadModel", lambda: T.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)),
    "t5": ("T5ForConditionalGeneration",
           lambda: T.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)),
    "bart": ("BartForConditionalGeneration",
             lambda: T.BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
                                  max_position_embeddings=32)),
    "llama": ("LlamaForCausalLM", lambda: T.LlamaConfig(**LM, **D, num_key_value_heads=1)),
    "gemma": ("GemmaForCausalLM", lambda: T.GemmaConfig(**LM, **D, num_key_value_heads=1, head_dim=8)),
    "mixtral": ("MixtralForCausalLM", lambda: T.MixtralConfig(**LM, **D, num_key_value_heads=1, num_local_experts=4,
                                                                num_experts_per_tok=2)),
    "qwen2_moe": ("Qwen2MoeForCausalLM",
                  lambda: T.Qwen2MoeConfig(**LM, **D, num_key_value_heads=1, num_experts=4, num_experts_per_tok=2,
                                           moe_intermediate_size=8, shared_expert_intermediate_size=16)),
    "olmoe": ("OlmoeForCausalLM", lambda: T.OlmoeConfig(**LM, **D, num_key_value_heads=1, num_experts=4,
                                                         num_experts_per_tok=2)),
    "gpt_neox": ("GPTNeoXForCausalLM", lambda: T.GPTNeoXConfig(**LM, **D)),
    "vit": ("ViTForImageClassification",
            lambda: T.ViTConfig(image_size=8, patch_size=4, num_hidden_layers=1, num_labels=3, **D)),
    "beit": ("BeitForImageClassification",
             lambda: T.BeitConfig(image_size=8, patch_size=4, num_hidden_layers=1, num_labels=3,
                                  use_relative_position_bias=True, **D)),
    "swin": ("SwinForImageClassification",
             lambda: T.SwinConfig(image_size=8, patch_size=2, embed_dim=8, depths=[1], num_heads=[2], window_size=2,
                                  num_labels=3)),
    "wav2vec2": ("Wav2Vec2ForCTC",
                 lambda: T.Wav2Vec2Config(vocab_size=12, num_hidden_layers=1, conv_dim=(8, 8), conv_stride=(5, 2),
                                          conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                                          num_conv_pos_embedding_groups=2, **D)),
    "roberta": ("RobertaForMaskedLM", lambda: T.RobertaConfig(**LM, **D, pad_token_id=1)),
    "distilbert": ("DistilBertForMaskedLM", lambda: T.DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2,
                                                                       hidden_dim=32, max_position_embeddings=32)),
    "albert": ("AlbertForMaskedLM", lambda: T.AlbertConfig(**LM, **D, embedding_size=8)),
    "electra": ("ElectraForPreTraining", lambda: T.ElectraConfig(**LM, **D, embedding_size=8)),
    "deberta_v2": ("DebertaV2ForMaskedLM", lambda: T.DebertaV2Config(**LM, **D, relative_attention=True,
                                                                     position_buckets=8, pos_att_type=["p2c", "c2p"])),
    "mistral": ("MistralForCausalLM", lambda: T.MistralConfig(**LM, **D, num_key_value_heads=1)),
    "qwen2": ("Qwen2ForCausalLM", lambda: T.Qwen2Config(**LM, **D, num_key_value_heads=1, tie_word_embeddings=True)),
    "phi": ("PhiForCausalLM", lambda: T.PhiConfig(**LM, **D)),
    "falcon": ("FalconForCausalLM", lambda: T.FalconConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                           num_attention_heads=2)),
    "opt": ("OPTForCausalLM", lambda: T.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                                  num_attention_heads=2, max_position_embeddings=32,
                                                  word_embed_proj_dim=16)),
    "bloom": ("BloomForCausalLM", lambda: T.BloomConfig(vocab_size=64, hidden_size=16, n_layer=1, n_head=2)),
    "gptj": ("GPTJForCausalLM", lambda: T.GPTJConfig(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                                     rotary_dim=4)),
    "mamba": ("MambaForCausalLM", lambda: T.MambaConfig(vocab_size=64, hidden_size=16, state_size=4,
                                                        num_hidden_layers=1, expand=2, conv_kernel=2)),
    "mbart": ("MBartForConditionalGeneration",
              lambda: T.MBartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
                                    max_position_embeddings=32)),
    "whisper": ("WhisperForConditionalGeneration",
                lambda: T.WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                        decoder_attention_heads=2, num_mel_bins=8, max_source_positions=16,
                                        max_target_positions=16, pad_token_id=1, bos_token_id=2,
                                        eos_token_id=3, decoder_start_token_id=2, suppress_tokens=[],
                                        begin_suppress_tokens=[])),
    "hubert": ("HubertForCTC",
               lambda: T.HubertConfig(vocab_size=12, num_hidden_layers=1, conv_dim=(8, 8), conv_stride=(5, 2),
                                      conv_kernel=(10, 3), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                                      **D)),
    "convnext": ("ConvNextForImageClassification",
                 lambda: T.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3,
                                          num_stages=2, image_size=16)),
    "resnet": ("ResNetForImageClassification",
               lambda: T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                      num_labels=3)),
    "qwen3_moe": ("Qwen3MoeForCausalLM",
                  lambda: T.Qwen3MoeConfig(**LM, **D, num_key_value_heads=1, head_dim=8, num_experts=4,
                                           num_experts_per_tok=2, moe_intermediate_size=8)),
    "clip": ("CLIPModel", lambda: T.CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "projection_dim": 8},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 8, "patch_size": 4, "projection_dim": 8}, projection_dim=8)),
}
PICKLABLE = [a for a in ARCHS if a not in ("wav2vec2", "hubert")]  # weight-norm parametrizations refuse torch.save(model)


class Built:
    """One architecture, built once: the model, what torch says each entry is, and its files."""

    def __init__(self, name: str, root: Path) -> None:
        cls_name, make_config = ARCHS[name]
        cls = getattr(T, cls_name)
        config = make_config()
        config.architectures = [cls.__name__]
        torch.manual_seed(0)
        self.cls = cls
        self.model = cls(config).eval()
        self.truth: dict[str, Kind] = {}
        for path, mod in self.model.named_modules(remove_duplicate=False):
            dot = f"{path}." if path else ""
            self.truth |= {dot + n: Kind.PARAMETER for n, p in mod._parameters.items() if p is not None}
            self.truth |= {dot + n: Kind.BUFFER_NP if n in mod._non_persistent_buffers_set else Kind.BUFFER
                           for n, b in mod._buffers.items() if b is not None}
        self.folder = root / name
        self.model.save_pretrained(self.folder)
        # The layout the original checkpoints use (per-expert MoE weights, encoder.layer.N, ...).
        from transformers.core_model_loading import revert_weight_conversion

        self.legacy = root / f"{name}_legacy"
        self.legacy.mkdir()
        config.save_pretrained(self.legacy)
        torch.save(revert_weight_conversion(self.model, dict(self.model.state_dict())),
                   self.legacy / "pytorch_model.bin")
        self.plain = root / f"{name}_state_dict"  # torch.save(model.state_dict()): the model's own names
        self.plain.mkdir()
        config.save_pretrained(self.plain)
        torch.save(self.model.state_dict(), self.plain / "pytorch_model.bin")
        self.pickled = root / f"{name}_pickle"
        self.pickled.mkdir()
        config.save_pretrained(self.pickled)
        if name in PICKLABLE:
            torch.save(self.model, self.pickled / "model.pt")
        self.info = build_hf_model(str(self.folder / "config.json"))

    def from_pretrained_is_clean(self, folder: Path) -> bool:
        _, info = self.cls.from_pretrained(folder, output_loading_info=True)
        return not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Built]]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("hf")
    cache: dict[str, Built] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> Built:
            cache[name] = Built(name, root)
            self[name] = cache[name]
            return cache[name]

    yield Lazy()
    hf_logging.set_verbosity(verbosity)
    hf_logging.enable_progress_bar()


@pytest.mark.parametrize("layout", ["folder", "legacy", "plain"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_kinds_and_verdict_with_config(built: dict[str, Built], arch: str, layout: str) -> None:
    b = built[arch]
    folder = getattr(b, layout)
    info = build_hf_model(str(folder / "config.json"))
    ck = classify.with_model(load_checkpoint(str(folder)), info)
    tensors = [e for e in ck.entries if e.tensor is not None]
    assert [e.name for e in tensors if e.kind == Kind.UNKNOWN] == []
    matches = info.map_keys(e.name for e in tensors)
    for e in tensors:
        assert e.kind == b.truth[matches[e.name].targets[0]], e.name
    blocking = [x for x in load_report(ck, info) if x.blocking]
    assert b.from_pretrained_is_clean(folder)
    assert blocking == []


@pytest.mark.parametrize("arch", list(ARCHS))
def test_inference_alone_matches_torch(built: dict[str, Built], arch: str) -> None:
    b = built[arch]
    for folder in (b.folder, b.plain):  # keys the model does not use under that name are not judged here
        ck = load_checkpoint(str(folder))
        wrong = [(e.name, e.kind) for e in ck.entries if e.tensor is not None and b.truth.get(e.name, e.kind) != e.kind]
        assert wrong == []


def test_inference_over_every_key_of_every_architecture(built: dict[str, Built]) -> None:
    """The issue's bar, over all file keys of all architectures together (original-layout keys judged
    by the model entry from_pretrained makes of them): >= 99.9% right by name and dtype rules alone."""
    assert len(ARCHS) >= 25
    total, wrong = 0, []
    for arch in ARCHS:
        b = built[arch]
        for folder in (b.folder, b.legacy, b.plain):
            tensors = [e for e in load_checkpoint(str(folder)).entries if e.tensor is not None]
            matches = b.info.map_keys(e.name for e in tensors)
            total += len(tensors)
            wrong += [(arch, e.name, e.kind) for e in tensors if e.kind != b.truth[matches[e.name].targets[0]]]
    assert 1 - len(wrong) / total >= 0.999, wrong


@pytest.mark.parametrize("arch", PICKLABLE)
def test_full_pickle_is_exact(built: dict[str, Built], arch: str) -> None:
    b = built[arch]
    ck = load_checkpoint(str(b.pickled / "model.pt"))
    assert {e.name: e.kind for e in ck.entries if e.tensor is not None} == b.truth
    info = build_hf_model(str(b.pickled / "config.json"))
    report = load_report(classify.with_model(ck, info), info)
    assert not any(x.blocking for x in report)
    assert not any("older version" in x.explanation for x in report)


def test_missing_expert_blocks_like_from_pretrained(built: dict[str, Built], tmp_path: Path) -> None:
    b = built["mixtral"]
    sd = torch.load(b.legacy / "pytorch_model.bin", weights_only=True)
    del sd["model.layers.0.self_attn.q_proj.weight"]
    (tmp_path / "config.json").write_text((b.legacy / "config.json").read_text())
    torch.save(sd, tmp_path / "pytorch_model.bin")
    info = build_hf_model(str(tmp_path / "config.json"))
    report = load_report(classify.with_model(load_checkpoint(str(tmp_path)), info), info)
    assert [(x.key, x.problem) for x in report if x.blocking] == [("model.layers.0.self_attn.q_proj.weight", "missing")]
    assert not b.from_pretrained_is_clean(tmp_path)


def test_moe_fusion_is_explained(built: dict[str, Built]) -> None:
    b = built["mixtral"]
    ck = classify.with_model(load_checkpoint(str(b.legacy)), b.info)
    expert = next(e for e in ck.entries if ".experts.0.w1." in e.name)
    assert expert.kind == Kind.PARAMETER and "gate_up_proj" in expert.evidence.detail
    lines = [x for x in load_report(ck, b.info) if x.problem == "converted"]
    assert lines and all(not x.blocking and x.fails_strict for x in lines)


def test_tied_key_absent_is_not_blocking(built: dict[str, Built]) -> None:
    b = built["bart"]
    ck = classify.with_model(load_checkpoint(str(b.folder)), b.info)
    tied = [x for x in load_report(ck, b.info) if x.problem == "missing"]
    assert tied and all(not x.blocking and x.fails_strict and "re-ties" in x.explanation for x in tied)


def test_bfloat16_config_builds_a_bfloat16_model(built: dict[str, Built], tmp_path: Path) -> None:
    b = built["llama"]
    copy.deepcopy(b.model).to(torch.bfloat16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    info = build_hf_model(str(tmp_path / "config.json"))
    report = load_report(classify.with_model(load_checkpoint(str(tmp_path)), info), info)
    assert report == []
    config = json.loads((tmp_path / "config.json").read_text()) | {"dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = build_hf_model(str(tmp_path / "config.json"))
    report = load_report(classify.with_model(load_checkpoint(str(tmp_path)), info), info)
    assert [(x.problem, x.blocking) for x in report] == [("dtype differs", False)]  # one line, not one per tensor


def test_model_for(built: dict[str, Built], tmp_path: Path) -> None:
    b = built["bert"]
    info, notes = model_for(str(b.folder), None, None, None, None, auto_hf=True)
    assert info is not None and info.class_name == "BertForMaskedLM" and not any("ignored" in n for n in notes)
    assert info.to_dict()["loader"] == "from_pretrained"
    assert model_for(str(b.folder), None, None, None, None, auto_hf=False) == (None, [])
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchModel"]}))
    info, notes = model_for(os.path.join(tmp_path, "w.pt"), None, None, None, None, auto_hf=True)
    assert info is None and len(notes) == 1 and "ignored" in notes[0]


def test_renamed_lines_are_grouped_by_rule(built: dict[str, Built]) -> None:
    b = built["vit"]
    ck = classify.with_model(load_checkpoint(str(b.legacy)), b.info)
    renamed = [x for x in load_report(ck, b.info) if x.problem == "renamed"]
    keys = [k for x in renamed for k in x.keys]
    assert len(keys) == len(set(keys)) > len(renamed)  # one line per rule, every key listed once
    assert all(x.to_dict()["keys"] == list(x.keys) and "->" in x.explanation for x in renamed)

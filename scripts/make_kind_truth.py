"""Build every transformers architecture that builds here with a small config on the meta device and
write what torch says each state_dict key is (parameter / persistent buffer) and which non-persistent
buffers each model registers: the truth that tests/unit/classify/test_inference_truth.py measures
name-and-dtype inference against.

    python scripts/make_kind_truth.py [-o tests/data/kind_truth.json] [--only llama,bert]

Nothing is downloaded: configs are the library's defaults with layer counts cut to one or two, so the
keys are the real ones (prefixes, module names, dtypes) without thousands of repeated layers.
Each row: [characters shared with the previous row's name, the rest of the name, p | b | n, how many
tensors it stands for (its module's copies in other layers and experts folded), dtype ("" for float32), shape].
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kind_truth.json"
# Layer counts cut to keep the truth small; widths stay the library's own (meta tensors cost nothing).
_LAYERS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
           "num_decoder_layers", "num_encoder_layers", "text_layers", "vision_layers")
# Detection models default to a timm backbone (not installed here): their own ResNet with frozen BN.
_NO_TIMM = {"use_timm_backbone": False, "use_pretrained_backbone": False}
# Task heads first: they add the head buffers (final_logits_bias...) a base model lacks.
_MAPPINGS = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
             "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES", "MODEL_MAPPING_NAMES")


def _shrink(config: Any, depth: int = 0) -> None:
    for attr in _LAYERS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 2:
            setattr(config, attr, 2)
    for attr, value in _NO_TIMM.items():
        if hasattr(config, attr):
            setattr(config, attr, value)
    if depth < 3:
        for value in list(vars(config).values()):
            if hasattr(value, "to_dict") and hasattr(value, "model_type"):
                _shrink(value, depth + 1)


def model_class(model_type: str) -> Any:
    """The task model (causal LM, seq2seq, detection) where transformers has one, else the base model."""
    import transformers
    from transformers.models.auto import modeling_auto

    for mapping in _MAPPINGS:
        name = getattr(modeling_auto, mapping).get(model_type)
        if isinstance(name, (list, tuple)):
            name = name[0]
        if name and hasattr(transformers, name):
            return getattr(transformers, name)
    return None


def truth_of(model: Any) -> dict[str, Any]:
    """Every state_dict key with p (parameter) or b (persistent buffer), dtype and shape, and every
    non-persistent buffer (n) beside them: from the modules' own dicts, checked against state_dict().
    Modules that differ only by layer/expert numbers and agree on every entry are written once with a
    count (per-tensor figures stay exact, and each written module keeps all its entries, so rules over
    a module's siblings see what the file has); names are prefix-compressed against the row before."""
    modules: dict[tuple[Any, ...], list[Any]] = {}
    seen: set[str] = set()
    keys = set(model.state_dict().keys())
    for path, mod in model.named_modules(remove_duplicate=False):
        dot = f"{path}." if path else ""
        found = [(k, v, "p") for k, v in mod._parameters.items()]
        found += [(k, v, "n" if k in mod._non_persistent_buffers_set else "b") for k, v in mod._buffers.items()]
        entries = []
        for k, v, code in found:
            if v is None or dot + k in seen or (code != "n" and dot + k not in keys):
                continue
            seen.add(dot + k)
            entries.append((k, code, str(v.dtype).removeprefix("torch."), tuple(v.shape)))
        if not entries:
            continue
        sig = (re.sub(r"\.\d+(?=\.|$)", ".N", path), tuple(entries))
        if sig in modules:
            modules[sig][1] += 1
        else:
            modules[sig] = [dot, 1, entries]
    out: list[list[Any]] = []
    prev = ""
    for dot, count, entries in modules.values():
        for leaf, code, dtype, shape in entries:
            name = dot + leaf
            common = len(os.path.commonprefix([prev, name]))
            out.append([common, name[common:], code, count, "" if dtype == "float32" else dtype, list(shape)])
            prev = name
    return {"class": type(model).__name__, "rows": out, "extra_state": sorted(keys - seen)}


def build(model_type: str) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig

    cls = model_class(model_type)
    if cls is None:
        raise LookupError("no model class")
    config = AutoConfig.for_model(model_type)
    if type(getattr(config, "backbone_config", None)).__name__ == "TimmBackboneConfig":
        # timm is not installed here: transformers' own ResNet, which these models freeze the same way.
        from transformers import ResNetConfig

        resnet = ResNetConfig(depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"])
        config = AutoConfig.for_model(model_type, backbone_config=resnet)
    _shrink(config)
    with torch.device("meta"):
        model = cls(config)
    return truth_of(model)


def main(argv: list[str] | None = None) -> int:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    archs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for model_type in sorted(CONFIG_MAPPING_NAMES):
        if only and model_type not in only:
            continue
        try:
            archs[model_type] = build(model_type)
        except Exception as exc:  # noqa: BLE001 — a model that does not build here is recorded, not fatal
            skipped[model_type] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            if only:
                traceback.print_exc()
        print(model_type, "ok" if model_type in archs else skipped[model_type], file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One architecture per line: compact, and a regenerated file diffs per architecture.
    lines = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in archs.items()]
    args.out.write_text("{" + json.dumps("transformers") + ": " + json.dumps(transformers.__version__)
                        + ",\n\"skipped\": " + json.dumps(skipped, separators=(",", ":"))
                        + ",\n\"architectures\": {\n" + ",\n".join(lines) + "\n}}\n")
    print(f"{len(archs)} built, {len(skipped)} skipped -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

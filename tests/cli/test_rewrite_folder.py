"""A folder rewrite keeps the whole folder (subfolders, modes, links) and the config's dtype follows a
cast, in place too. The library that saved a folder loads the result: sentence-transformers where it
is installed, transformers always."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
transformers = pytest.importorskip("transformers")


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _bert(folder: Path) -> torch.nn.Module:
    """A tiny BERT with its tokenizer, saved by transformers."""
    _quiet_hf()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "a", "b", "c"]
    (folder.parent / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder.parent / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> what it is: link (with its target), dir, or file (with its mode)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = f"file {stat.S_IMODE(p.stat().st_mode):o}"
    return out


def test_sentence_transformers_folder_survives_a_cast(tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models

    _bert(tmp_path / "bert")
    word = models.Transformer(str(tmp_path / "bert"))
    model = st.SentenceTransformer(modules=[word, models.Pooling(16)], device="cpu")
    model.save(str(tmp_path / "st"))
    assert (tmp_path / "st" / "1_Pooling" / "config.json").is_file()
    _ok(["cast", str(tmp_path / "st"), "--dtype", "half", "-o", str(tmp_path / "out")])
    got, want = _tree(tmp_path / "out"), _tree(tmp_path / "st")
    assert set(got) == set(want)  # every file and folder; the copies keep their modes (the weights are new)
    assert {k: v for k, v in got.items() if k != "model.safetensors"} == {k: v for k, v in want.items()
                                                                        if k != "model.safetensors"}
    loaded = st.SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert next(loaded.parameters()).dtype == torch.float16
    a, b = model.encode(["hello world a"]), loaded.encode(["hello world a"])
    assert b.shape == a.shape and abs(a - b.astype("float32")).max() < 2e-2


def test_subfolders_modes_and_links_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    model = _bert(src)
    (src / "extra" / "deep").mkdir(parents=True)
    (src / "extra" / "deep" / "notes.bin").write_bytes(b"\x00\x01 not a checkpoint")
    (src / "extra" / "run.sh").write_text("#!/bin/sh\n")
    (src / "extra" / "run.sh").chmod(0o755)
    (src / "private.json").write_text("{}")
    (src / "private.json").chmod(0o600)
    (src / "inside").symlink_to("extra/deep/notes.bin")
    (tmp_path / "shared.txt").write_text("outside the folder")
    (src / "outside").symlink_to("../shared.txt")
    (src / "optimizer.pt").write_bytes(b"training state, not rewritten")
    _ok(["cast", str(src), "--dtype", "half", "-o", str(tmp_path / "out")])
    got, want = _tree(tmp_path / "out"), _tree(src)
    assert got["inside"] == "link -> extra/deep/notes.bin"
    assert got["outside"] == "file 644" and (tmp_path / "out" / "outside").read_text() == "outside the folder"
    assert got["extra/run.sh"] == "file 755" and got["private.json"] == "file 600"
    same = set(want) - {"outside", "model.safetensors"}
    assert set(got) == set(want) and {k: got[k] for k in same} == {k: want[k] for k in same}
    loaded = transformers.BertModel.from_pretrained(tmp_path / "out")
    assert loaded.dtype == torch.float16
    for k, v in model.half().state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_sharded_folder_without_config_keeps_its_other_files(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "card.md").write_text("# card")
    torch.manual_seed(0)
    sd = {"a.weight": torch.randn(4, 4), "b.weight": torch.randn(4)}
    save_file({"a.weight": sd["a.weight"]}, str(src / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": sd["b.weight"]}, str(src / "model-00002-of-00002.safetensors"))
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}))
    _ok(["cast", str(src), "--dtype", "half", "-o", str(tmp_path / "out")])
    assert (tmp_path / "out" / "docs" / "card.md").read_text() == "# card"
    assert set(_tree(tmp_path / "out")) == set(_tree(src))
    assert torch.equal(load_file(str(tmp_path / "out" / "model-00001-of-00002.safetensors"))["a.weight"],
                       sd["a.weight"].half())


def test_hf_cache_snapshot_is_copied_as_files(tmp_path: Path) -> None:
    """A cache snapshot's files are links into ../../blobs: the output holds the files themselves."""
    model = _bert(tmp_path / "plain")
    snap = tmp_path / "models--x" / "snapshots" / "abc123"
    blobs = tmp_path / "models--x" / "blobs"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for p in (tmp_path / "plain").iterdir():
        (blobs / f"blob-{p.name}").write_bytes(p.read_bytes())
        (snap / p.name).symlink_to(f"../../blobs/blob-{p.name}")
    _ok(["cast", str(snap), "--dtype", "half", "-o", str(tmp_path / "out")])
    tree = _tree(tmp_path / "out")
    assert tree and all(v.startswith("file") for v in tree.values()), tree
    assert set(tree) == {p.name for p in (tmp_path / "plain").iterdir()}
    loaded = transformers.BertModel.from_pretrained(tmp_path / "out")
    assert torch.equal(loaded.embeddings.word_embeddings.weight, model.half().embeddings.word_embeddings.weight)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer("hello world")["input_ids"] == [2, 5, 6, 3]


def test_a_failed_copy_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import shutil

    from statecli.rewrite import folder

    _bert(tmp_path / "src")
    (tmp_path / "src" / "sub").mkdir()
    (tmp_path / "src" / "sub" / "data.txt").write_text("x")
    real = shutil.copy2

    def failing(s: str, d: str) -> object:
        if s.endswith("data.txt"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(s, d)

    monkeypatch.setattr(folder.shutil, "copy2", failing)
    result = runner.invoke(app, ["cast", str(tmp_path / "src"), "--dtype", "half", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "sub/data.txt" in result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "vocab.txt"]  # no temp folder left


@pytest.mark.parametrize(("keys", "want"), [({"dtype": "float32"}, {"dtype": "float16"}),
                                            ({"torch_dtype": "float32"}, {"torch_dtype": "float16"}),
                                            ({"dtype": "float32", "torch_dtype": "float32"},
                                             {"dtype": "float16", "torch_dtype": "float16"}),
                                            ({}, {"dtype": "float16"})])
@pytest.mark.parametrize("in_place", [True, False])
def test_config_dtype_follows_the_cast(tmp_path: Path, keys: dict[str, str], want: dict[str, str],
                                      in_place: bool) -> None:
    src = tmp_path / "src"
    _bert(src)
    config = json.loads((src / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("dtype", "torch_dtype")} | keys
    (src / "config.json").write_text(json.dumps(config))
    out = src if in_place else tmp_path / "out"
    _ok(["cast", str(src), "--dtype", "half", *(["--in-place"] if in_place else ["-o", str(out)])])
    got = json.loads((out / "config.json").read_text())
    assert {k: got[k] for k in ("dtype", "torch_dtype") if k in got} == want
    assert transformers.BertModel.from_pretrained(out).dtype == torch.float16

"""cast, strip, move, convert: outputs checked with torch and safetensors, writes atomic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from statecli.cli import app
from statecli.rewrite import stream
from statecli.rewrite.plan import Plan, load, plan
from statecli.rewrite.run import run
from statecli.rewrite.spec import CastSpec, Target

runner = CliRunner()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def train(tmp_path: Path) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 8)).sum().backward()
    opt.step()
    sd = model.state_dict()
    sd["1.running_var"][0] = 1e6  # overflows float16 (max 65504)
    sd["1.running_mean"][1] = 1e-9  # underflows float16 (smallest subnormal ~6e-8)
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "epoch": 3, "hparams": {"lr": 1e-3, "arch": "mlp"},
            "model_ema": {k: v.clone() + 1 if v.is_floating_point() else v.clone() for k, v in sd.items()}}
    path = tmp_path / "train.pt"
    torch.save(ckpt, path)
    return path, ckpt


def test_cast_matches_tensor_to(tmp_path: Path, train: tuple[Path, dict]) -> None:
    path, ckpt = train
    before = _digest(path)
    out = tmp_path / "half.pt"
    stdout = _ok(["cast", str(path), "--dtype", "half", "-o", str(out)])
    got = torch.load(out, weights_only=True)
    for k, v in ckpt["model"].items():
        if v.is_floating_point():
            assert got["model"][k].dtype == torch.float16
            assert torch.equal(got["model"][k], v.to(torch.float16)), k
        else:
            assert torch.equal(got["model"][k], v) and got["model"][k].dtype == v.dtype, k
    # optimizer state, other containers and values survive untouched
    assert got["epoch"] == 3 and got["hparams"] == ckpt["hparams"]
    assert torch.equal(got["optimizer"]["state"][0]["exp_avg"], ckpt["optimizer"]["state"][0]["exp_avg"])
    assert got["optimizer"]["param_groups"] == ckpt["optimizer"]["param_groups"]
    assert got["model"]._metadata == ckpt["model"]._metadata
    # overflow/underflow counts equal torch's own cast
    v = ckpt["model"]["1.running_var"]
    overflow = int((torch.isinf(v.half()) & torch.isfinite(v)).sum())
    m = ckpt["model"]["1.running_mean"]
    underflow = int(((m.half() == 0) & (m != 0)).sum())
    assert overflow == 1 and underflow == 1
    assert "value(s) overflowed to inf" in stdout and "values lost in the cast" in stdout
    assert _digest(path) == before


def test_cast_strict_refuses_and_writes_nothing(tmp_path: Path, train: tuple[Path, dict]) -> None:
    path, _ = train
    out = tmp_path / "strict.pt"
    result = runner.invoke(app, ["cast", str(path), "--dtype", "half", "-o", str(out), "--strict"])
    assert result.exit_code == 2 and "--strict" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".statecli-*"))


def test_cast_keep_only_and_optimizer(tmp_path: Path, train: tuple[Path, dict]) -> None:
    path, ckpt = train
    out = tmp_path / "k.pt"
    _ok(["cast", str(path), "--dtype", "bfloat16", "--keep", r"running_", "--include-optimizer", "-o", str(out)])
    got = torch.load(out, weights_only=True)
    assert got["model"]["1.running_var"].dtype == torch.float32
    assert got["model"]["0.weight"].dtype == torch.bfloat16
    assert got["optimizer"]["state"][0]["exp_avg"].dtype == torch.bfloat16
    out2 = tmp_path / "b.pt"
    _ok(["cast", str(path), "--dtype", "half", "--only", "buffers", "-o", str(out2)])
    got = torch.load(out2, weights_only=True)
    assert got["model"]["1.running_mean"].dtype == torch.float16 and got["model"]["0.weight"].dtype == torch.float32


def test_strip_optimizer_ema_and_pattern(tmp_path: Path, train: tuple[Path, dict]) -> None:
    path, ckpt = train
    out = tmp_path / "s.pt"
    stdout = _ok(["strip", str(path), "--optimizer", "--ema", "--pattern", r"^2\.", "-o", str(out)])
    got = torch.load(out, weights_only=True)
    assert set(got) == {"model", "epoch", "hparams"}
    assert "2.weight" not in got["model"] and "0.weight" in got["model"]
    assert "removed" in stdout
    promoted = tmp_path / "ema.pt"
    _ok(["strip", str(path), "--keep-ema-as-model", "--optimizer", "-o", str(promoted)])
    got = torch.load(promoted, weights_only=True)
    assert "model_ema" not in got and "optimizer" not in got
    assert torch.equal(got["model"]["0.weight"], ckpt["model_ema"]["0.weight"])


def test_strip_buffers_and_non_persistent_with_model(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                   "        self.lin = torch.nn.Linear(2, 2)\n"
                   "        self.register_buffer('position_ids', torch.arange(4), persistent=False)\n")
    sd = {"lin.weight": torch.ones(2, 2), "lin.bias": torch.zeros(2), "position_ids": torch.arange(4)}
    torch.save(sd, tmp_path / "old.pt")
    no_model = runner.invoke(app, ["strip", str(tmp_path / "old.pt"), "--non-persistent", "-o", str(tmp_path / "x.pt")])
    assert no_model.exit_code == 2 and "--model" in no_model.stderr
    _ok(["strip", str(tmp_path / "old.pt"), "--non-persistent", "--model", f"{src}:M", "-o", str(tmp_path / "new.pt")])
    got = torch.load(tmp_path / "new.pt", weights_only=True)
    assert set(got) == {"lin.weight", "lin.bias"}
    refused = runner.invoke(app, ["strip", str(tmp_path / "old.pt"), "--pattern", "lin.bias", "--model", f"{src}:M",
                                  "-o", str(tmp_path / "y.pt")])
    assert refused.exit_code == 2 and "required" in refused.stderr and not (tmp_path / "y.pt").exists()
    _ok(["strip", str(tmp_path / "old.pt"), "--buffers", "-o", str(tmp_path / "z.pt")])
    assert "position_ids" not in torch.load(tmp_path / "z.pt", weights_only=True)


def test_move_cuda_file_loads_on_cpu(tmp_path: Path, samples: Path) -> None:
    src = samples / "cuda.pt"
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(src, weights_only=True)
    ref = torch.load(src, weights_only=True, map_location="cpu")
    out = tmp_path / "cpu.pt"
    _ok(["move", str(src), "--device", "cpu", "-o", str(out)])
    got = torch.load(out, weights_only=True)
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


def test_move_to_cuda_tags(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "c.pt")
    _ok(["move", str(tmp_path / "c.pt"), "--device", "cuda:0", "-o", str(tmp_path / "g.pt")])
    data = json.loads(_ok(["inspect", str(tmp_path / "g.pt"), "--format", "json"]))
    assert data["entries"][0]["device"] == "cuda:0"
    assert torch.equal(torch.load(tmp_path / "g.pt", weights_only=True, map_location="cpu")["w"], torch.ones(3))


def test_convert_round_trip_with_tied_weights(tmp_path: Path) -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    base = torch.randn(6, 5)
    sd = {"emb.weight": emb.weight.detach(), "head.weight": head.weight.detach(), "t": base.t(), "v": base[2:4],
          "i": torch.arange(3), "b": torch.tensor([True]), "bf": torch.randn(3).bfloat16(), "e": torch.empty(0, 2)}
    torch.save(sd, tmp_path / "a.pt")
    _ok(["convert", str(tmp_path / "a.pt"), "-o", str(tmp_path / "a.safetensors"), "--duplicate-tied"])
    st = load_file(str(tmp_path / "a.safetensors"))
    assert set(st) == set(sd)  # --duplicate-tied: the tied key is stored as a copy, so it loads strictly
    tied = torch.nn.Linear(4, 10, bias=False)
    tied.weight = torch.nn.Parameter(torch.zeros(10, 4))
    tied.load_state_dict({"weight": st["head.weight"]}, strict=True)
    data = json.loads(_ok(["inspect", str(tmp_path / "a.safetensors"), "--format", "json"]))
    assert sorted(e["name"] for e in data["entries"]) == sorted(st)  # exactly the stored tensors
    for k in st:
        assert torch.equal(st[k], sd[k]), k
    _ok(["convert", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "b.pt")])
    back = torch.load(tmp_path / "b.pt", weights_only=True)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype, k
    assert back["emb.weight"].data_ptr() == back["head.weight"].data_ptr()  # the tie is restored


def test_convert_pt_views_stay_shared(tmp_path: Path) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"base": base, "row": base[1], "t": base.t()}
    torch.save(sd, tmp_path / "v.pt")
    _ok(["cast", str(tmp_path / "v.pt"), "--dtype", "float64", "-o", str(tmp_path / "w.pt")])
    got = torch.load(tmp_path / "w.pt", weights_only=True)
    assert got["row"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()
    for k in sd:
        assert torch.equal(got[k], sd[k].double())


def test_sharded_output_and_back(tmp_path: Path) -> None:
    torch.manual_seed(1)
    sd = {f"layers.{i}.weight": torch.randn(64, 64) for i in range(6)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    out = tmp_path / "sharded"
    _ok(["convert", str(tmp_path / "m.safetensors"), "-o", str(out), "--max-shard-size", "40KB"])
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    per_shard = 40_000 // (64 * 64 * 4)  # 40KB is 40,000 bytes: two 16 KiB tensors fit
    n = -(-len(sd) // per_shard)
    assert len(shards) == n and shards[0] == f"model-00001-of-{n:05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in sd.values())
    merged: dict = {}
    for s in shards:
        merged.update(load_file(str(out / s)))
    assert all(torch.equal(merged[k], sd[k]) for k in sd)
    _ok(["convert", str(out), "-o", str(tmp_path / "one.pt")])
    back = torch.load(tmp_path / "one.pt", weights_only=True)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    bins = tmp_path / "bins"
    _ok(["convert", str(tmp_path / "one.pt"), "-o", str(bins), "--max-shard-size", "40KB", "--to", "pt"])
    assert (bins / "pytorch_model.bin.index.json").exists()


def test_dcp_round_trip(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4).half()}
    torch.save(sd, tmp_path / "s.pt")
    _ok(["convert", str(tmp_path / "s.pt"), "-o", str(tmp_path / "dcp"), "--to", "dcp"])
    assert (tmp_path / "dcp" / ".metadata").exists()
    _ok(["convert", str(tmp_path / "dcp"), "-o", str(tmp_path / "back.pt")])
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_unsupported_layouts_refused_or_dropped(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "s": torch.eye(3).to_sparse()}, tmp_path / "sp.pt")
    out = tmp_path / "sp.safetensors"
    refused = runner.invoke(app, ["convert", str(tmp_path / "sp.pt"), "-o", str(out)])
    assert refused.exit_code == 2 and "'s'" not in refused.stderr or "s" in refused.stderr
    assert "drop-unsupported" in refused.stderr and not out.exists()
    _ok(["convert", str(tmp_path / "sp.pt"), "-o", str(out), "--drop-unsupported"])
    assert set(load_file(str(out))) == {"w"}


def test_never_overwrites_input_and_in_place(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"w": torch.ones(2)}, path)
    before = _digest(path)
    same = runner.invoke(app, ["convert", str(path), "-o", str(path)])
    assert same.exit_code == 2 and "--in-place" in same.stderr and _digest(path) == before
    none = runner.invoke(app, ["cast", str(path), "--dtype", "half"])
    assert none.exit_code == 2 and "--output" in none.stderr
    _ok(["cast", str(path), "--dtype", "half", "--in-place"])
    assert torch.load(path, weights_only=True)["w"].dtype == torch.float16


def test_dry_run_writes_nothing(tmp_path: Path, train: tuple[Path, dict]) -> None:
    path, _ = train
    out = tmp_path / "dry.pt"
    stdout = _ok(["cast", str(path), "--dtype", "half", "-o", str(out), "--dry-run"])
    assert "dry run" in stdout and "0.weight" in stdout and not out.exists()


def test_interrupted_write_leaves_nothing(tmp_path: Path, train: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = train
    before = _digest(path)
    real = stream.chunks
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C mid-stream
        yield from real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stream, "chunks", failing)
    out = tmp_path / "partial.pt"
    with pytest.raises(KeyboardInterrupt):
        run(plan(*load(str(path), None), CastSpec(dtype="half")), Target(output=str(out)))
    assert not out.exists() and not list(tmp_path.glob(".statecli-*"))
    assert _digest(path) == before
    calls["n"] = 0
    result = runner.invoke(app, ["cast", str(path), "--dtype", "half", "-o", str(out)])
    assert result.exit_code == 130 and not out.exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_full_model_pickle_becomes_its_state_dict(tmp_path: Path, samples: Path, suffix: str) -> None:
    """A torch.save(model) file whose class cannot be imported: the output is what model.state_dict()
    holds (parameters and persistent buffers), read without running the pickle."""
    from statecli.io.values import value_reader
    from statecli.load import load_checkpoint

    src = samples / "full_model.pt"
    ck = load_checkpoint(str(src))
    state = {e.name: e for e in ck.entries if e.kind in ("parameter", "buffer")}
    assert any(e.kind == "buffer (non-persistent)" for e in ck.entries)
    out = tmp_path / f"state{suffix}"
    result = runner.invoke(app, ["convert", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "state_dict()" in result.stderr  # a note: on stderr with every other message
    got = torch.load(out, weights_only=True) if suffix == ".pt" else load_file(str(out))
    assert set(got) == set(state)
    with value_reader(ck) as reader:
        for name, e in state.items():
            assert e.tensor is not None
            assert torch.equal(got[name], reader.tensor(e.tensor)), name


def test_output_must_load_strictly_where_the_input_did(tmp_path: Path) -> None:
    from statecli.errors import UsageError
    from statecli.modeldef import build_model

    src = tmp_path / "m.py"
    src.write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    forced = _ok(["strip", str(tmp_path / "w.pt"), "--pattern", "bias", "--force", "--model", f"{src}:make",
                  "-o", str(tmp_path / "forced.pt")])
    assert "removed 1" in forced and set(torch.load(tmp_path / "forced.pt", weights_only=True)) == {"weight"}
    info = build_model(f"{src}:make", {})
    ck, raw = load(str(tmp_path / "w.pt"), None, info)
    bad = Plan(ck=ck, raw=raw, drop=frozenset({("", "bias")}), model=info)
    with pytest.raises(UsageError, match="strict=True"):
        run(bad, Target(output=str(tmp_path / "bad.pt")))
    assert not (tmp_path / "bad.pt").exists() and not list(tmp_path.glob(".statecli-*"))
    _ok(["cast", str(tmp_path / "w.pt"), "--dtype", "half", "--model", f"{src}:make", "-o", str(tmp_path / "h.pt")])


def test_bf16_to_fp16_losses_counted_like_torch(tmp_path: Path) -> None:
    """Same width, different range: bfloat16 -> float16 overflows above 65504 and underflows below
    float16's smallest subnormal; --strict refuses, the counts match torch's own cast."""
    w = torch.tensor([1e30, -7e4, 1.0, 1e-30, 3e-8, 0.0], dtype=torch.bfloat16)
    torch.save({"w": w}, tmp_path / "bf.pt")
    out = tmp_path / "h.safetensors"
    refused = runner.invoke(app, ["cast", str(tmp_path / "bf.pt"), "--dtype", "half", "--strict", "-o", str(out)])
    assert refused.exit_code == 2 and not out.exists()
    data = json.loads(_ok(["cast", str(tmp_path / "bf.pt"), "--dtype", "half", "-o", str(out)]) and
                      _ok(["inspect", str(out), "--format", "json", "--stats"]))
    h = w.half()
    assert data["entries"][0]["stats"]["inf"] == int(torch.isinf(h).sum()) == 2
    stdout = _ok(["cast", str(tmp_path / "bf.pt"), "--dtype", "half", "-o", str(tmp_path / "h2.pt")])
    underflow = int(((h == 0) & (w != 0)).sum())
    row = next(line.split() for line in stdout.splitlines() if line.startswith("w "))
    assert row == ["w", "2", str(underflow)] and underflow >= 1
    assert torch.equal(load_file(str(out))["w"], h)


def test_strip_reports_storage_actually_freed(tmp_path: Path) -> None:
    sd = {"w": torch.ones(3), "b": torch.zeros(2)}
    torch.save({"model": sd, "ema": {"decay": 0.99, "shadow": sd}, "extra": {"x": torch.ones(5)}}, tmp_path / "n.pt")
    stdout = _ok(["strip", str(tmp_path / "n.pt"), "--ema", "-o", str(tmp_path / "o.pt")])
    assert "saved 0 B of tensor storage" in stdout  # the EMA shadow shares storage with the model
    stdout = _ok(["strip", str(tmp_path / "n.pt"), "--pattern", "^extra", "-o", str(tmp_path / "p.pt")])
    assert f"saved {5 * 4} B of tensor storage" in stdout


def test_dcp_output_keeps_the_whole_training_checkpoint(tmp_path: Path, train: tuple[Path, dict]) -> None:
    import torch.distributed.checkpoint as dcp

    path, ckpt = train
    _ok(["convert", str(path), "--to", "dcp", "-o", str(tmp_path / "d")])
    target = {"model": {k: torch.empty_like(v) for k, v in ckpt["model"].items()},
              "optimizer": {"state": {0: {k: torch.empty_like(v) for k, v in ckpt["optimizer"]["state"][0].items()}}}}
    dcp.load(target, checkpoint_id=str(tmp_path / "d"), no_dist=True)
    assert all(torch.equal(target["model"][k], v) for k, v in ckpt["model"].items())
    assert torch.equal(target["optimizer"]["state"][0]["exp_avg"], ckpt["optimizer"]["state"][0]["exp_avg"])


def test_same_name_in_two_containers_is_two_entries(tmp_path: Path) -> None:
    torch.save({"model": {"scale": torch.ones(2), "running_mean": torch.zeros(2)}, "scale": torch.tensor([3.0]),
                "running_mean": torch.tensor([1.0])}, tmp_path / "c.pt")
    _ok(["strip", str(tmp_path / "c.pt"), "--buffers", "-o", str(tmp_path / "s.pt")])
    got = torch.load(tmp_path / "s.pt", weights_only=True)
    assert "running_mean" not in got["model"] and torch.equal(got["running_mean"], torch.tensor([1.0]))
    _ok(["cast", str(tmp_path / "c.pt"), "--dtype", "half", "-o", str(tmp_path / "h.pt")])
    got = torch.load(tmp_path / "h.pt", weights_only=True)
    assert got["model"]["scale"].dtype == torch.float16 and got["scale"].dtype == torch.float32


@pytest.mark.parametrize("extra", [[], ["--max-shard-size", "1KB"], ["--to", "dcp"]])
def test_strict_refuses_in_every_output_layout(tmp_path: Path, extra: list[str]) -> None:
    torch.save({"w": torch.tensor([1e6, 1.0, float("nan")])}, tmp_path / "big.pt")  # a NaN must not hide overflow
    out = tmp_path / ("o.pt" if not extra else "o")
    result = runner.invoke(app, ["cast", str(tmp_path / "big.pt"), "--dtype", "half", "--strict", "-o", str(out), *extra])
    assert result.exit_code == 2 and "--strict" in result.stderr and not out.exists()


def test_cast_counts_losses_on_views_not_unused_storage(tmp_path: Path) -> None:
    base = torch.tensor([1e6, 1.0, 2.0, 1e-30])
    torch.save({"w": base[1:3]}, tmp_path / "s.pt")  # the saved storage holds all four values
    _ok(["cast", str(tmp_path / "s.pt"), "--dtype", "half", "--strict", "-o", str(tmp_path / "o.pt")])
    assert torch.equal(torch.load(tmp_path / "o.pt", weights_only=True)["w"], torch.tensor([1.0, 2.0]).half())


def test_shards_hold_every_key_and_only_their_views(tmp_path: Path) -> None:
    w = torch.randn(4, 3)
    torch.save({"emb.weight": w, "head.weight": w}, tmp_path / "t.pt")
    _ok(["convert", str(tmp_path / "t.pt"), "-o", str(tmp_path / "st"), "--max-shard-size", "1GB", "--to", "safetensors"])
    index = json.loads((tmp_path / "st" / "model.safetensors.index.json").read_text())
    for name, shard in index["weight_map"].items():
        assert torch.equal(load_file(str(tmp_path / "st" / shard))[name], w)
    big = torch.randn(1000, 1000)
    rows = {"a": torch.randn(10), "row0": big[0], "row1": big[1]}
    torch.save(rows, tmp_path / "rows.pt")
    _ok(["convert", str(tmp_path / "rows.pt"), "-o", str(tmp_path / "bins"), "--max-shard-size", "5KB", "--to", "pt"])
    shards = list((tmp_path / "bins").glob("*.bin"))
    assert sum(p.stat().st_size for p in shards) < 64 * 1024  # not three copies of a 4 MB storage
    merged: dict = {}
    for p in shards:
        merged.update(torch.load(p, weights_only=True))
    assert all(torch.equal(merged[k], v) for k, v in rows.items())


def test_in_place_refuses_format_or_layout_changes(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "x.pt")
    for extra in (["--max-shard-size", "1KB"], ["--to", "safetensors"]):
        result = runner.invoke(app, ["cast", str(tmp_path / "x.pt"), "--dtype", "half", "--in-place", *extra])
        assert result.exit_code == 2 and (tmp_path / "x.pt").is_file()


@pytest.mark.parametrize("command", [["cast", "--dtype", "half"], ["strip", "--optimizer"], ["move", "--device", "cpu"],
                                     ["convert"]])
def test_rewrite_json_output(tmp_path: Path, train: tuple[Path, dict], command: list[str]) -> None:
    """-f json: a script reads what changed, the bytes saved and where the output went."""
    from statecli.state import SCHEMA_VERSION

    path, _ = train
    out = tmp_path / "o.safetensors"
    data = json.loads(_ok([command[0], str(path), *command[1:], "-o", str(out), "-f", "json"]))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["output"] == str(out) and data["out_format"] == "safetensors" and data["input"] == str(path)
    assert data["dry_run"] is False and data["after"]["entries"] == len(load_file(str(out)))
    assert all(set(c) == {"name", "what", "detail", "nbytes", "overflow", "underflow"} for c in data["changes"])
    if command[0] == "cast":
        lossy = {c["name"]: c for c in data["changes"] if c["what"] == "cast" and (c["overflow"] or c["underflow"])}
        assert lossy["1.running_var"]["overflow"] == 1 and lossy["1.running_mean"]["underflow"] == 1
    if command[0] == "strip":
        assert data["saved_bytes"] > 0 and {c["detail"] for c in data["changes"]} == {"optimizer state"}


def test_rewrite_csv_and_md_output(tmp_path: Path, train: tuple[Path, dict]) -> None:
    import csv
    import io

    path, _ = train
    stdout = _ok(["strip", str(path), "--optimizer", "-o", str(tmp_path / "a.pt"), "-f", "csv"])
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert rows and all(r["what"] == "removed" and r["detail"] == "optimizer state" for r in rows)
    md = _ok(["cast", str(path), "--dtype", "half", "-o", str(tmp_path / "b.pt"), "-f", "md", "--dry-run"])
    assert "would write" in md and "| name | what |" in md and "| 0.weight | cast | float32 -> float16 |" in md

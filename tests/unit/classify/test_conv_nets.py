"""torchvision-style conv nets built from torch.nn alone (a ResNet with BatchNorm and downsampling, a
MobileNet with depthwise convolutions): inferred kinds, the pickled module and the model definition
against named_parameters/named_buffers."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from statecli import classify  # noqa: E402
from statecli.load import load_checkpoint  # noqa: E402
from statecli.modeldef import build_model, load_report  # noqa: E402
from statecli.state import Kind  # noqa: E402


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


class ResNet(nn.Module):
    """torchvision.models.resnet's layout: conv1/bn1, layerN.M blocks with downsample, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


class MobileNet(nn.Module):
    """torchvision.models.mobilenet's layout: features.N (depthwise + pointwise), classifier.N."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
                                      _dw(8, 16, 1), _dw(16, 32, 2))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))


NETS = {"resnet": ResNet, "mobilenet": MobileNet}


def _truth(model: nn.Module) -> dict[str, Kind]:
    out = {n: Kind.PARAMETER for n, _ in model.named_parameters()}
    return out | {n: Kind.BUFFER for n, _ in model.named_buffers()}


@pytest.mark.parametrize("net", list(NETS))
def test_conv_net_kinds(tmp_path: Path, net: str) -> None:
    model = NETS[net]()
    truth = _truth(model)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save(model, tmp_path / "full.pt")
    inferred = load_checkpoint(str(tmp_path / "sd.pt"))
    assert {e.name: e.kind for e in inferred.entries} == truth
    assert all(e.evidence.inferred for e in inferred.entries)
    pickled = load_checkpoint(str(tmp_path / "full.pt"))
    assert {e.name: e.kind for e in pickled.entries if e.tensor is not None} == truth
    info = build_model(f"{__name__}:{NETS[net].__name__}", {})
    ck = classify.with_model(inferred, info)
    assert {e.name: e.kind for e in ck.entries} == truth
    assert load_report(ck, info) == []

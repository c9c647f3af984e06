"""ResNet trunks that return the layer4 feature map, in torchvision's parameter layout.

The parameter names match `torchvision.models.resnet*` exactly (conv1, bn1, layer1.0.conv1, …, no fc), so a trunk's
state dict loads into torchvision with `strict=False` missing only `fc`. Depth per stage and the width of the first
stage are configurable: the report's slim ResNet-50 and the tiny CPU trunks of the demo and tests are the same code.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from frafer.errors import FraferError

# arch → (block type, blocks per stage). The slim ResNet-50 drops blocks from layer3 and layer4; the report gives
# no counts, so frafer chooses (3, 4, 4, 2) — override with model.blocks.
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet50_slim": (Bottleneck, (3, 4, 4, 2)),
}


class ResNetTrunk(nn.Module):
    """Stem + four residual stages; forward returns the layer4 map F of shape (B, C, H/32, W/32)."""

    def __init__(
        self,
        block: type[nn.Module],
        blocks: tuple[int, ...],
        width: int = 64,
        remove_maxpool: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        # Without the max-pool the output stride is 16: a 64 px face still gives a 4×4 region map.
        self.maxpool = nn.Identity() if remove_maxpool else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, width, blocks[0], stride=1)
        self.layer2 = self._make_stage(block, width * 2, blocks[1], stride=2)
        self.layer3 = self._make_stage(block, width * 4, blocks[2], stride=2)
        self.layer4 = self._make_stage(block, width * 8, blocks[3], stride=2)
        self.out_channels = width * 8 * block.expansion
        self._init_weights()

    def _make_stage(self, block: type[nn.Module], planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a frafer trunk starts where a torchvision ResNet does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def through_layer3(self, x: torch.Tensor) -> torch.Tensor:
        """Stem to layer3: the part DMUE's branches share, (B, C/2, H/16, W/16)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.through_layer3(x))  # (B, C, h, w)


def build_trunk(
    arch: str, blocks: tuple[int, ...] | list[int] = (), width: int = 64, remove_maxpool: bool = False
) -> ResNetTrunk:
    """The trunk of `arch` ('resnet18', 'resnet34', 'resnet50', 'resnet50_slim'); `blocks` overrides its depths."""
    if arch not in ARCHS:
        raise FraferError(f"unknown backbone '{arch}' (known: {', '.join(ARCHS)})")
    block, default_blocks = ARCHS[arch]
    return ResNetTrunk(block, tuple(blocks) or default_blocks, width=width, remove_maxpool=remove_maxpool)

"""ResNet-50 (v1.5: stride on the 3x3 conv), written in plain torch with seeded random weights.

torchvision is not available here, so the architecture is spelled out: 7x7/2
stem + BatchNorm + ReLU + 3x3/2 max-pool, four stages of bottleneck blocks
(1x1 -> 3x3 -> 1x1, expansion 4, projection shortcut on the first block),
global average pool, fully connected classifier. Input ``pixel_values``
(float32, [batch, 3, H, W], the Hugging Face name), output ``logits``.

Both exporters fold BatchNorm into the preceding Conv in eval mode (TorchScript's
eval peephole, dynamo's onnxscript optimizer), as any real export does.
"""

from __future__ import annotations

from ._torch import randomize_1d, require_torch, seeded

DESCRIPTION = "ResNet-50 v1.5 image classifier (plain torch): bottleneck blocks, BatchNorm, 224x224"

SIZES = {
    "tiny": dict(layers=(1, 1, 1, 1), width=8, image=64, classes=10),
    "base": dict(layers=(3, 4, 6, 3), width=64, image=224, classes=1000),
}

INPUTS = ("pixel_values",)
OUTPUTS = ("logits",)


def input_shapes(size: str, seq: int, batch: int) -> dict[str, tuple[list[int], str]]:
    """``seq`` is ignored: the image side comes from the size."""
    image = SIZES[size]["image"]
    return {"pixel_values": ([batch, 3, image, image], "float32")}


def example_inputs(size: str, seq: int, batch: int, rng) -> dict:
    import numpy as np

    shape = input_shapes(size, seq, batch)["pixel_values"][0]
    return {"pixel_values": rng.standard_normal(shape, dtype=np.float32)}


def make(size: str, seq: int, batch: int, seed: int):
    torch = require_torch()
    nn = torch.nn
    cfg = SIZES[size]

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride):
            super().__init__()
            out = planes * self.expansion
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + identity)

    class ResNet(nn.Module):
        def __init__(self, layers, width, classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            inplanes = width
            stages = []
            for i, blocks in enumerate(layers):
                planes = width * 2**i
                stage = []
                for b in range(blocks):
                    stage.append(Bottleneck(inplanes, planes, stride=2 if (b == 0 and i > 0) else 1))
                    inplanes = planes * Bottleneck.expansion
                stages.append(nn.Sequential(*stage))
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(inplanes, classes)

        def forward(self, pixel_values):
            x = self.maxpool(self.relu(self.bn1(self.conv1(pixel_values))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    with seeded(seed):
        model = ResNet(cfg["layers"], cfg["width"], cfg["classes"])
        # torchvision's init: He-normal convs, so activations keep their scale through 50 layers.
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    randomize_1d(model, seed)
    return model.eval()

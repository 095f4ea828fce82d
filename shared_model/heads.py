"""Classifier heads shared by the supernet and the child networks."""
from __future__ import annotations

import torch
from torch import nn


class AuxiliaryHead(nn.Module):
    """DARTS/ENAS auxiliary classifier (Szegedy et al. 2016; DARTS ``AuxiliaryHeadCIFAR``).

    ReLU -> avg-pool 5 stride 3 -> 1x1 conv 128 -> BN -> ReLU -> conv 768 -> BN
    -> ReLU -> linear. On CIFAR the input is 8x8, the pool gives 2x2 and the
    second conv is 2x2. For other image sizes the pool and conv adapt so that
    the conv still sees the whole pooled map (``kernel = pooled size``).

    Args:
        channels: input channels.
        num_classes: output classes.
        spatial: input height/width at the attachment point.
    """

    def __init__(self, channels: int, num_classes: int, spatial: int = 8):
        super().__init__()
        if spatial >= 5:
            pool: nn.Module = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
            pooled = (spatial - 5) // 3 + 1
        else:
            pool, pooled = nn.Identity(), spatial
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, pooled, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 768, 1, 1)
        return self.classifier(x.flatten(1))

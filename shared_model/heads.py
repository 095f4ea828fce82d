"""Classifier heads shared by the supernet and the child networks."""
from __future__ import annotations

import torch
from torch import nn

from shared_model.batch_norm import BatchNorm2d


class AuxiliaryHead(nn.Module):
    """DARTS/ENAS auxiliary classifier (Szegedy et al. 2016; DARTS ``AuxiliaryHeadCIFAR``).

    ReLU -> avg-pool 5 stride 3 -> 1x1 conv 128 -> BN -> ReLU -> conv 768 -> BN
    -> ReLU -> linear. On CIFAR the input is 8x8, the pool gives 2x2 and the
    second conv is 2x2. For other image sizes the pool and conv adapt so that
    the conv still sees the whole pooled map (``kernel = pooled size``).

    The official ENAS head (``micro_child.py``, scope ``aux_head``) pads that
    conv "SAME" (TensorFlow: the extra row and column go after), so it yields a
    2x2 map that is averaged before the linear layer, and its linear layer has
    no bias; ``same_padding=True, bias=False`` reproduces it.

    Args:
        channels: input channels.
        num_classes: output classes.
        spatial: input height/width at the attachment point.
        same_padding: pad the second conv "SAME" and average its output (ENAS)
            instead of a valid conv with a 1x1 output (DARTS).
        bias: the linear layer has a bias (DARTS) or not (ENAS).
    """

    def __init__(self, channels: int, num_classes: int, spatial: int = 8, same_padding: bool = False,
                 bias: bool = True):
        super().__init__()
        if spatial >= 5:
            pool: nn.Module = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
            pooled = (spatial - 5) // 3 + 1
        else:
            pool, pooled = nn.Identity(), spatial
        layers = [
            # Not in place: the input is the cell output, which the next cells,
            # or global pooling when this is the last cell, read unchanged.
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            BatchNorm2d(128),
            nn.ReLU(inplace=True),
        ]
        if same_padding:
            before = (pooled - 1) // 2
            layers.append(nn.ZeroPad2d((before, pooled - 1 - before, before, pooled - 1 - before)))
        layers += [
            nn.Conv2d(128, 768, pooled, bias=False),
            BatchNorm2d(768),
            nn.ReLU(inplace=True),
        ]
        # DARTS keeps its original module indices (checkpoint keys); the ENAS
        # variant has the padding at index 5.
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 768, 1, 1), or (B, 768, pooled, pooled) with same_padding
        return self.classifier(x.mean((2, 3)))  # (B, num_classes)

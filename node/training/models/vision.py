"""Image classifiers from torchvision's architecture builders, adapted to small images and never downloaded.

``weights=None`` always: the weights come from the job seed (or the customer's ``--init`` file), never from a hub.
"""

from __future__ import annotations

from torch import nn

from protocols.specs import ModelConfig

DEFAULT_CLASSES = 10
DEFAULT_CHANNELS = 1
"""Fashion-MNIST's shape, so ``resnet18-small-v1`` trains the default dataset without a model section."""


def resnet18_small_v1(config: ModelConfig) -> nn.Module:
    """ResNet-18 for small images (CIFAR-style): a 3×3 stride-1 stem and no max-pool, so a 28×28 or 32×32 input
    still reaches the last stage at 4×4. 11.2 M parameters with 10 classes; BatchNorm (momentum 0.1) throughout."""
    from torchvision.models import resnet18  # imported on first build: it takes a second

    classes = config.classes or DEFAULT_CLASSES
    channels = config.channels or DEFAULT_CHANNELS
    model: nn.Module = resnet18(weights=None, num_classes=classes)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # The same initialisation torchvision gives every other convolution of the network.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model

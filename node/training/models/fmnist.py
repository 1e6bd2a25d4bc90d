"""The two hand-written Fashion-MNIST networks (1×28×28 images, 10 classes): parameters only, no buffers."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from protocols.specs import ModelConfig


def cnn_v1(config: ModelConfig) -> nn.Module:
    # 160 + 4,640 + 100,416 + 650 = 105,866 parameters; ~90% test accuracy on Fashion-MNIST.
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 16, kernel_size=3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, kernel_size=3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(32 * 7 * 7, 64),
            relu3=nn.ReLU(),
            fc2=nn.Linear(64, 10),
        )
    )


def mlp_v1(config: ModelConfig) -> nn.Module:
    # 200,960 + 2,570 = 203,530 parameters; ~10x faster per step than the CNN on one core.
    return nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(28 * 28, 256), relu1=nn.ReLU(), fc2=nn.Linear(256, 10))
    )

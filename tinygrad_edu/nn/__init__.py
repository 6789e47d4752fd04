"""Neural-network building blocks, shaped like ``torch.nn``."""

from . import functional
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, Identity, Linear, LogSoftmax, MaxPool2d,
                     ReLU, Sigmoid, Softmax, Tanh)
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = ["functional", "Module", "ModuleDict", "ModuleList", "Parameter", "Sequential", "Linear",
           "ReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Flatten", "Identity", "Conv2d",
           "MaxPool2d", "AvgPool2d", "Dropout",
           "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss"]

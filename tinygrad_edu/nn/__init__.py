"""Neural-network building blocks, shaped like ``torch.nn``."""

from . import functional
from .layers import Flatten, Identity, Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = ["functional", "Module", "ModuleDict", "ModuleList", "Parameter", "Sequential", "Linear",
           "ReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Flatten", "Identity",
           "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss"]

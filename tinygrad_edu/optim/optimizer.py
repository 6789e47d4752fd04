"""``Optimizer``: holds parameter groups and per-parameter state; subclasses define ``step``."""

import copy
import warnings

import numpy as np

from ..tensor import Tensor

EMPTY_HINT = ("optimizer got an empty parameter list. If your model keeps its layers in a plain "
              "Python list (self.layers = [...]), nothing was registered: use nn.ModuleList, "
              "or nn.ModuleDict for a dict")


class Optimizer:
    """Base class: ``params`` is an iterable of Tensors, or of dicts (param groups) with their own
    hyperparameters. Updates happen in place on ``p.data``, outside any graph."""

    # tinygrad_edu.jit replays ``step()`` as one call, and may count on it touching only the
    # parameters, their .grad and ``self.state``, never an array the step's forward made (a
    # subclass whose step reads an activation must set this to False).
    replay_touches_only_parameters = True

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = {}  # Parameter -> dict of buffers (momentum, Adam moments, step count)
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError(EMPTY_HINT)
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError("optimizing a tensor that does not require grad")
        group["params"] = list(dict.fromkeys(params))   # each once, in order (Tensors hash by identity)
        if len(group["params"]) < len(params):
            # PyTorch's warning; PyTorch then updates such a parameter twice per step, we once
            warnings.warn("optimizer contains a parameter group with duplicate parameters; each is "
                          "kept once, so it is updated once per step (PyTorch warns the same and "
                          "will make it an error: see github.com/pytorch/pytorch/issues/40967)",
                          UserWarning, stacklevel=4)   # the line that built the optimizer
        earlier = {p for other in self.param_groups for p in other["params"]}   # by identity, as above
        if not earlier.isdisjoint(group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()   # through the engine, so that a step jit captures does it too

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """State and hyperparameters, with parameters named by their index (as PyTorch)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        params = [p for group in self.param_groups for p in group["params"]]
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"a loaded parameter group has {len(saved['params'])} parameters, "
                                 f"the optimizer's has {len(group['params'])}")
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: (np.array(v, dtype=p.dtype) if isinstance(v, np.ndarray) else v)
                             for k, v in s.items()}

"""``Module``, ``Parameter`` and the containers (``Sequential``, ``ModuleList``, ``ModuleDict``).

A Module's layers and weights are its attributes: ``self.fc1 = nn.Linear(...)`` in ``__init__``.
Its ``Parameter`` attributes are its parameters and its ``Module`` attributes its sub-modules, in
the order they were assigned (Python keeps an object's attributes in that order), which gives
dotted names such as ``layers.0.weight`` as in PyTorch. They are kept in one place, the attributes
themselves. A plain Python list of layers is not a Module: nothing in it is found; we warn.
"""

import functools
import types
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from ..tensor import (RemovableHandle, Tensor, _hook_name, _refuse_hooks_under_capture, float32,
                      float64, is_grad_enabled)


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a Module: a leaf with ``requires_grad=True``."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _holds_modules(value):
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, (list, tuple, dict)) and any(isinstance(v, Module) for v in items)


def _unregistered_warning(owner, name, value):
    kind = type(value).__name__
    container = "nn.ModuleDict" if isinstance(value, dict) else "nn.ModuleList"
    warnings.warn(f"{type(owner).__name__}.{name} is a plain Python {kind} holding Modules: their "
                  f"parameters are not registered, so parameters() and the optimizer will not see "
                  f"them. Use {container}(...) instead.", UserWarning, stacklevel=3)


def _kind(value):
    """Parameter, Module, or None for any other attribute."""
    return Parameter if isinstance(value, Parameter) else Module if isinstance(value, Module) else None


class _BackwardHooks:
    """One call of a module with backward hooks. Each Tensor argument that needs a gradient reaches
    ``forward`` through a view, and the output reaches the caller through one: nodes of the graph
    of their own, whose tensor hooks (``Tensor.register_hook``) see dL/doutput and dL/dargument
    once each is complete. The output's hook runs the pre-hooks (which may replace dL/doutput),
    and the module's hooks run once every argument that the output depends on has its gradient
    (at once, if none has). A new call, a new ``_BackwardHooks``; a second backward over the same
    graph starts again at the output."""

    def __init__(self, module, pre_hooks, hooks):
        self.module, self.pre_hooks, self.hooks = module, pre_hooks, hooks
        self.views = {}          # position of an argument -> the view forward got
        self.count = 0           # positional arguments
        self.expected = set()    # the positions whose gradient the hooks wait for
        self.grad_output, self.grad_inputs = None, {}

    @classmethod
    def of(cls, module):
        """The backward hooks of ``module`` for one call, or None if it has none."""
        pre_hooks = list((module._backward_pre_hooks or {}).values())
        hooks = list((module._backward_hooks or {}).values())
        return cls(module, pre_hooks, hooks) if (pre_hooks or hooks) and is_grad_enabled() else None

    def arguments(self, args):
        self.count = len(args)
        args = list(args)
        for i, a in enumerate(args):
            if isinstance(a, Tensor) and a.requires_grad:
                args[i] = self.views[i] = a.reshape(a.shape)
        return tuple(args)

    def output(self, output):
        if not isinstance(output, Tensor):
            raise TypeError(f"backward hooks of {type(self.module).__name__} need it to return one "
                            f"Tensor, but it returned {type(output).__name__}")
        if not output.requires_grad:
            return output
        self.expected = self._arguments_reached_from(output)
        view = output.reshape(output.shape)
        view.register_hook(self._on_grad_output)
        for i in self.expected:
            self.views[i].register_hook(functools.partial(self._on_grad_input, i))
        return view

    def _arguments_reached_from(self, output):
        """The positions of the argument views that ``output`` was computed from (a walk down the
        graph from it); an argument forward did not use gets no gradient, and is not waited for."""
        position = {view: i for i, view in self.views.items()}
        found, stack, seen = set(), [output], set()
        while stack:
            t = stack.pop()
            if t in position:
                found.add(position[t])
                continue
            if t._ctx is not None and t._ctx not in seen:
                seen.add(t._ctx)
                stack.extend(t._ctx.parents)
        return found

    def _on_grad_output(self, grad):
        self.grad_inputs = {}
        replaced = None
        for hook in self.pre_hooks:
            new = hook(self.module, (grad,))
            if new is not None:
                grad = replaced = self._new_grad_output(new, hook)
        self.grad_output = grad
        if not self.expected:   # no argument needs a gradient: the hooks need not wait
            self._call_hooks(None)
        return replaced

    def _on_grad_input(self, i, grad):
        self.grad_inputs[i] = grad
        if len(self.grad_inputs) == len(self.expected):
            return self._call_hooks(i)
        return None

    def _call_hooks(self, last):
        """The module's hooks, with the gradients collected; returns what replaces dL/d of the
        argument ``last`` (whose tensor hook is running), or None."""
        grad_input = tuple(self.grad_inputs.get(i) for i in range(self.count))
        replaced = None
        for hook in self.hooks:
            new = hook(self.module, grad_input, (self.grad_output,))
            if new is None:
                continue
            if not isinstance(new, tuple) or len(new) != self.count:
                raise TypeError(f"backward hook '{_hook_name(hook)}' of {type(self.module).__name__} "
                                f"returned {_described(new)}; it returns None or a tuple of "
                                f"{self.count} gradient(s), one per positional argument")
            changed = [i for i in range(self.count) if new[i] is not grad_input[i]]
            if changed and (len(self.expected) != 1 or changed != [last]):
                # with several, the others' gradients have flowed on before the last one came
                raise RuntimeError(f"backward hook '{_hook_name(hook)}' of {type(self.module).__name__} "
                                   f"replaced grad_input {changed}: a replacement is taken for a "
                                   f"module with one argument that needs a gradient, and this "
                                   f"call has {len(self.expected)}")
            if changed:
                grad_input = new
                replaced = new[last]
        return replaced

    def _new_grad_output(self, new, hook):
        """The dL/doutput in what a pre-hook returned (a 1-tuple), or a TypeError naming it."""
        if not isinstance(new, tuple) or len(new) != 1 or not isinstance(new[0], Tensor):
            raise TypeError(f"backward pre-hook '{_hook_name(hook)}' of {type(self.module).__name__} "
                            f"returned {_described(new)}; it returns None or a 1-tuple: the new "
                            f"grad_output")
        return new[0]


def _described(value):
    return f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model: subclass it, assign layers in ``__init__``, and write
    ``forward``. Calling the module calls ``forward``."""

    # Hooks, id -> function in registration order; None (on the class) until a module gets its
    # first, so a call without hooks costs four attribute reads
    _forward_pre_hooks = None
    _forward_hooks = None
    _backward_pre_hooks = None
    _backward_hooks = None

    def __init__(self):
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if (self._forward_pre_hooks is None and self._forward_hooks is None
                and self._backward_pre_hooks is None and self._backward_hooks is None):
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    def _call_with_hooks(self, args, kwargs):
        """``forward`` between the hooks: each pre-hook may replace the positional arguments, each
        forward hook the output (see ``register_forward_pre_hook`` and ``register_forward_hook``);
        with backward hooks, the arguments and the output pass through ``_BackwardHooks``."""
        pre_hooks = list((self._forward_pre_hooks or {}).values())   # a hook may remove itself
        hooks = list((self._forward_hooks or {}).values())
        backward = _BackwardHooks.of(self)
        if pre_hooks or hooks or backward:
            _refuse_hooks_under_capture(f"a {'backward' if backward else 'forward'} hook of "
                                        f"{type(self).__name__}")
        for hook in pre_hooks:
            new_args = hook(self, args)
            if new_args is not None:
                args = new_args if isinstance(new_args, tuple) else (new_args,)   # as PyTorch does
        if backward:
            args = backward.arguments(args)
        output = self.forward(*args, **kwargs)
        for hook in hooks:
            new_output = hook(self, args, output)
            if new_output is not None:
                output = new_output
        return backward.output(output) if backward else output

    def _add_hook(self, kind, hook):
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        if self.__dict__.get(kind) is None:
            object.__setattr__(self, kind, {})
        return RemovableHandle(self.__dict__[kind], hook)

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, args)`` before every ``forward``, ``args`` the positional arguments
        (a tuple). It returns None, or new arguments (a tuple, or one value that becomes a
        1-tuple). Returns a handle: ``handle.remove()`` takes the hook off. As in PyTorch."""
        return self._add_hook("_forward_pre_hooks", hook)

    def register_forward_hook(self, hook):
        """Call ``hook(module, args, output)`` after every ``forward``; it returns None, or an
        output that replaces ``output``. For looking at activations (a layer's mean, its dead
        ReLUs) without changing ``forward``. Returns a handle: ``handle.remove()`` takes the hook
        off. As in PyTorch."""
        return self._add_hook("_forward_hooks", hook)

    def register_full_backward_pre_hook(self, hook):
        """Call ``hook(module, grad_output)`` in every backward that reaches this module's output,
        ``grad_output`` = (dL/doutput,), before the module's own gradients are computed. It returns
        None, or new ``grad_output`` (a tuple) used in their place. For a module that returns one
        Tensor. Returns a handle: ``handle.remove()`` takes the hook off. As in PyTorch."""
        return self._add_hook("_backward_pre_hooks", hook)

    def register_full_backward_hook(self, hook):
        """Call ``hook(module, grad_input, grad_output)`` in every backward that reaches this
        module's output, once dL/d of its arguments are known: ``grad_input`` has one entry per
        positional argument (None for one that is not a Tensor or needs no gradient),
        ``grad_output`` = (dL/doutput,). The gradient flow layer by layer, without changing
        ``forward``. The hook returns None, or a new ``grad_input`` (a tuple), used in its place
        (for a module with one argument that needs a gradient). For a module that returns one
        Tensor. Returns a handle: ``handle.remove()`` takes the hook off. As in PyTorch, the
        module's ``forward`` gets a view of each Tensor argument and the caller a view of its
        output: nodes of the graph that the hooks watch."""
        return self._add_hook("_backward_hooks", hook)

    # --- parameters and sub-modules: the attributes that are Parameters and Modules ------------
    def __setattr__(self, name, value):
        if "training" not in self.__dict__ and isinstance(value, (Parameter, Module)):   # no __init__
            raise AttributeError(f"cannot assign {type(value).__name__} '{name}' before "
                                 f"Module.__init__() is called: add super().__init__()")
        if _holds_modules(value):
            _unregistered_warning(self, name, value)
        if name in self.__dict__ and _kind(self.__dict__[name]) is not _kind(value):
            object.__delattr__(self, name)   # becomes a parameter or layer now: listed after the
            # ones before it (self.head = None as a placeholder, filled in last), as in PyTorch
        object.__setattr__(self, name, value)

    @property
    def _parameters(self):
        """This module's own Parameters by attribute name, in order (read-only: assign attributes)."""
        return types.MappingProxyType({n: v for n, v in vars(self).items() if isinstance(v, Parameter)})

    @property
    def _modules(self):
        """This module's own sub-modules by attribute name, in order (read-only: assign attributes)."""
        return types.MappingProxyType({n: v for n, v in vars(self).items() if isinstance(v, Module)})

    def register_parameter(self, name, param):
        setattr(self, name, param)

    def add_module(self, name, module):
        setattr(self, name, module)

    # --- walking the tree ---------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        """Yield (dotted name, module) for this module and all below it, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            stack.extend(reversed([(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]))

    def modules(self):
        return (m for _, m in self.named_modules())

    def get_submodule(self, target):
        """The module at the dotted name ``target`` (as ``named_modules`` names it: "layers.0";
        "" is this one). As in PyTorch; an AttributeError names the part that is not there."""
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule '{part}' (looking "
                                     f"up '{target}')")
            module = module._modules[part]
        return module

    def named_parameters(self, prefix="", recurse=True):
        """Yield (dotted name, Parameter) in definition order; a shared Parameter appears once."""
        self._warn_unregistered()
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def _warn_unregistered(self):
        """The lecture's bug, caught when it bites: a list filled *after* assignment."""
        for module in self.modules():
            for name, value in module.__dict__.items():
                if _holds_modules(value):
                    _unregistered_warning(module, name, value)

    # --- training state -----------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()   # through the engine, so that a step jit captures does it too

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def apply(self, fn):
        for m in self.modules():
            fn(m)
        return self

    def _cast(self, dtype):
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            if p.grad is not None:
                p.grad.data = p.grad.data.astype(dtype)
        return self

    def double(self):
        return self._cast(float64)

    def float(self):
        return self._cast(float32)

    # --- saving and loading -------------------------------------------------------------------
    def state_dict(self):
        """An ordered dict of dotted name -> detached tensor (sharing memory with the weight)."""
        return OrderedDict((name, p.detach()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy weights in place from ``state_dict``; with ``strict``, keys must match exactly."""
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("missing key(s): " + ", ".join(missing))
        if strict and unexpected:
            errors.append("unexpected key(s): " + ", ".join(unexpected))
        for name, param in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name].data if isinstance(state_dict[name], Tensor) else state_dict[name])
            if value.shape != param.shape:
                errors.append(f"size mismatch for {name}: the checkpoint has shape {value.shape}, "
                              f"the model has shape {param.shape}")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for name, param in own.items():
            if name in state_dict:
                value = state_dict[name]
                np.copyto(param.data, value.data if isinstance(value, Tensor) else value, casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # --- printing -----------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        extra = [f"  {self.extra_repr()}"] if self.extra_repr() else []
        return f"{type(self).__name__}(\n" + "\n".join(extra + lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Takes modules as arguments (named "0", "1", ...) or one OrderedDict of name -> module.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[index][1]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """A list of Modules whose parameters are registered (names "0", "1", ...): use it, not a
    plain list, to hold a variable number of layers."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _renumber(self, modules):
        for name in list(self._modules):
            delattr(self, name)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[index]

    def __setitem__(self, index, module):
        modules = list(self._modules.values())
        modules[index] = module
        self._renumber(modules)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index]
        self._renumber(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """A dict of name -> Module whose parameters are registered."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

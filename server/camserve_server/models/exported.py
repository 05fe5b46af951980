"""Load a ``torch.export`` archive (``.pt2``) as an ``nn.Module`` whose layers can be reached.

``torch.export.load`` reads the program and its weights from the archive: a zip
of a serialized graph and raw tensor data, not pickle, so loading it runs no
code from the file. ``ExportedProgram.module()`` is one flat ``fx.GraphModule``
of aten operators: its submodules only hold parameters and are never called, so
a forward hook on a layer would never fire. ``torch.export.unflatten`` rebuilds
the original module hierarchy instead (one ``InterpreterModule`` per module,
each called through ``__call__``), so layer hooks, activation capture and
substitution, the fx head split and gradients all work as on the eager model.

Leaves that the methods recognise by type come back as one-operator graphs:
``nn.Linear`` (the CAM weights, the default embedding), ``nn.Conv2d`` (filters)
and ``nn.ReLU`` (guided backprop, deconvnet). Each is rebuilt as that module
type, sharing its parameters, when the node metadata says it was one and its
graph is exactly that operator; the rebuilt model must give the program's
logits on a probe input, or the plain unflattened module is served instead.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.export.unflatten import InterpreterModule

from ..errors import InvalidArgument

log = logging.getLogger(__name__)

_LINEAR = "torch.nn.modules.linear.Linear"
_CONV2D = "torch.nn.modules.conv.Conv2d"
_RELU = "torch.nn.modules.activation.ReLU"


def load_exported(path: Path, *, name: str, input_size: tuple[int, int]) -> nn.Module:
    """The program in ``path`` as an unflattened module, its standard leaves restored.

    The program must take one image batch ``(N, 3, H, W)`` with a dynamic batch
    dimension; a static ``H, W`` must equal ``input_size``.
    """
    try:
        program = torch.export.load(str(path))
    except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidArgument(
            f"model {name!r}: cannot load exported program {path}: {exc}"
        ) from None
    spatial = _check_input(program, name, input_size)
    flat = program.module()
    module = torch.export.unflatten(program)
    restored = restore_leaf_layers(module)
    if restored and not _same_logits(flat, module, input_size):
        log.warning(
            "model %s: restored leaf layers changed the logits; serving it as exported", name
        )
        module = torch.export.unflatten(program)
    if spatial is not None:
        module.register_forward_pre_hook(_size_guard(name, spatial))
    return module


def _check_input(
    program: torch.export.ExportedProgram, name: str, input_size: tuple[int, int]
) -> tuple[int, int] | None:
    """Refuse programs the server cannot batch; return the static ``(H, W)``, if any."""
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(user_inputs) != 1 or user_inputs[0] not in placeholders:
        raise InvalidArgument(
            f"model {name!r}: an exported classifier takes one image batch, "
            f"this program takes {len(user_inputs)} inputs"
        )
    value = placeholders[user_inputs[0]].meta.get("val")
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    if len(shape) != 4:
        raise InvalidArgument(f"model {name!r}: the exported input must be (N, 3, H, W)")
    if isinstance(shape[0], int):
        raise InvalidArgument(
            f"model {name!r}: the program was exported with a fixed batch of {shape[0]}; "
            "export it with a dynamic batch dimension, e.g. "
            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}"
        )
    height, width = shape[2], shape[3]
    if not (isinstance(height, int) and isinstance(width, int)):
        return None
    if (height, width) != tuple(input_size):
        raise InvalidArgument(
            f"model {name!r}: the program was exported for {height}x{width} inputs "
            f"but input_size is {input_size[0]}x{input_size[1]}"
        )
    return height, width


def _size_guard(name: str, spatial: tuple[int, int]) -> Callable[[nn.Module, Any], None]:
    def guard(_module: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and tuple(x.shape[-2:]) != spatial:
            raise InvalidArgument(
                f"model {name!r} was exported for {spatial[0]}x{spatial[1]} inputs; "
                f"got {int(x.shape[-2])}x{int(x.shape[-1])}"
            )

    return guard


def restore_leaf_layers(root: nn.Module) -> int:
    """Replace one-operator ``Linear``/``Conv2d``/``ReLU`` leaves by those modules; count them."""
    count = 0
    for qualified, module in list(root.named_modules()):
        if not qualified or not isinstance(module, InterpreterModule):
            continue
        if any(True for _ in module.children()):
            continue
        rebuilt = _rebuild(module)
        if rebuilt is None:
            continue
        parent, _, child = qualified.rpartition(".")
        setattr(root.get_submodule(parent), child, rebuilt)
        count += 1
    return count


def _rebuild(module: InterpreterModule) -> nn.Module | None:
    graph = module.graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    if len(calls) != 1 or any(n.op in ("call_module", "call_method") for n in graph.nodes):
        return None
    (call,) = calls
    output = next(n for n in graph.nodes if n.op == "output")
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if output.args[0] is not call or len(inputs) != 1 or call.args[:1] != (inputs[0],):
        return None
    kind = _original_type(call)
    target = call.target
    if kind == _RELU and target in (torch.ops.aten.relu.default, torch.ops.aten.relu_.default):
        return nn.ReLU(inplace=target is torch.ops.aten.relu_.default)
    if kind == _LINEAR and target is torch.ops.aten.linear.default:
        return _linear(module, call)
    if kind == _CONV2D and target is torch.ops.aten.conv2d.default:
        return _conv2d(module, call)
    return None


def _original_type(call: fx.Node) -> str:
    stack = call.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    _, kind = list(stack.values())[-1]
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def _tensor(module: nn.Module, node: object) -> nn.Parameter | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = getattr(module, str(node.target))
    if isinstance(value, nn.Parameter):
        return value
    return nn.Parameter(value, requires_grad=False) if isinstance(value, torch.Tensor) else None


def _linear(module: InterpreterModule, call: fx.Node) -> nn.Linear | None:
    args = list(call.args) + [None] * (3 - len(call.args))
    weight, bias = _tensor(module, args[1]), _tensor(module, args[2])
    if weight is None or weight.dim() != 2 or (args[2] is not None and bias is None):
        return None
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    return layer


def _conv2d(module: InterpreterModule, call: fx.Node) -> nn.Conv2d | None:
    defaults: list[Any] = [None, None, None, [1, 1], [0, 0], [1, 1], 1]
    args = list(call.args) + defaults[len(call.args) :]
    for index, key in enumerate(("input", "weight", "bias", "stride", "padding", "dilation")):
        args[index] = call.kwargs.get(key, args[index])
    args[6] = call.kwargs.get("groups", args[6])
    weight, bias = _tensor(module, args[1]), _tensor(module, args[2])
    if weight is None or weight.dim() != 4 or (args[2] is not None and bias is None):
        return None
    groups = int(args[6])
    layer = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        (int(weight.shape[2]), int(weight.shape[3])),
        stride=tuple(args[3]),
        padding=tuple(args[4]),
        dilation=tuple(args[5]),
        groups=groups,
        bias=bias is not None,
        device="meta",
    )
    layer.weight = weight
    if bias is not None:
        layer.bias = bias
    return layer


def _same_logits(reference: nn.Module, module: nn.Module, input_size: tuple[int, int]) -> bool:
    probe = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = reference(probe), module(probe)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    scale = float(expected.abs().max().clamp_min(1.0))
    return bool((got - expected).abs().max() <= 1e-4 * scale)

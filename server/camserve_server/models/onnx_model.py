"""Run an ONNX classifier with onnxruntime: forward passes only.

An ONNX graph offers no layer hooks and no gradients, so it serves the methods
that only read logits of (perturbed) inputs and a layer's activation: occlusion,
Score-CAM, Ablation-CAM, Eigen-CAM, feature maps, channel profiles, embeddings.

Layers are the eager model's module names, mapped to graph tensors by
``onnx_layers`` (a raw tensor name is accepted too). For a layer, a session of
the graph with that tensor as an extra output returns the activation and the
logits in one run; where the graph splits at the layer, the part after it is
extracted as its own session (the head), which Ablation-CAM and cache hits run
alone. Both are built on first use and the most recent few are kept.

The embedding (the ``Embed`` RPC's default: the penultimate features) is made a
graph output at load: walking back from the logits over a bias ``Add``, the
final ``Gemm`` or ``MatMul`` against a constant weight is found, and its data
input is added to the graph's outputs with the ``onnx`` package, so one run
returns both. It is reported as ``<node>:input``, as ``fc:input`` for a torch
model. A graph without such a node serves no embedding.

The per-sample activation bytes that size the engine's perturbation chunks to
the memory budget come from ONNX shape inference at batch 1: the sum of every
intermediate tensor, as the torch models measure their layer outputs.

Sessions use the CPU execution provider, or CUDA's when the device is a GPU and
onnxruntime was built with it (else the CPU, with a warning). Tensors cross as
numpy arrays; results come back on the input's device.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError
from onnx import helper, shape_inference

from ..errors import InvalidArgument
from .inspection import LayerInfo, ModelStructure
from .onnx_layers import (
    default_graph_layer,
    graph_layers,
    head_model,
    head_nodes,
    known_shapes,
    with_outputs,
)

log = logging.getLogger(__name__)

MAX_CACHED_SESSIONS = 4  # per kind (layer outputs, heads): each holds a copy of the weights

_Cached = TypeVar("_Cached")


class OnnxClassifier:
    """One onnxruntime session of a classifier graph, with its embedding output if any."""

    def __init__(
        self, path: Path, *, name: str, input_size: tuple[int, int], device: torch.device
    ) -> None:
        self.name = name
        self.device = device
        self._input_size = input_size
        try:
            model = onnx.load(str(path))
        except (OSError, ValueError, DecodeError) as exc:
            raise InvalidArgument(f"model {name!r}: cannot read ONNX file {path}: {exc}") from None
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
            raise InvalidArgument(
                f"model {name!r}: an ONNX classifier takes one (N, 3, H, W) input"
            )
        self._input = inputs[0].name
        self._dims = _dims(inputs[0])
        _check_static_size(name, self._dims, input_size)
        self._logits = graph.output[0].name
        self._embedding = _final_linear_input(graph, initializers)
        self._embedding_layer = None if self._embedding is None else self._embedding[1]
        inferred = _infer_at_batch_one(model, self._input, input_size)
        self._types = _elem_types(inferred)
        if self._embedding is not None and self._embedding[0] not in {o.name for o in graph.output}:
            kind = self._types.get(self._embedding[0], onnx.TensorProto.FLOAT)
            graph.output.append(helper.make_tensor_value_info(self._embedding[0], kind, None))
        self._model = model
        self._session = self._new_session(model)
        self._layers = graph_layers(graph, known_shapes(inferred))
        self._tensors = {out for node in graph.node for out in node.output}
        self._lock = threading.Lock()
        self._layer_sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self._heads: OrderedDict[str, OnnxHead] = OrderedDict()
        self._splits: dict[str, bool] = {}
        self._unverified: set[str] = set()
        probe = torch.zeros(1, 3, *input_size, device=device)
        vectors, logits = self._run(probe, with_embedding=self._embedding is not None)
        if logits.dim() != 2:
            raise InvalidArgument(f"model {name!r}: the first ONNX output must be logits (N, C)")
        self._structure = ModelStructure(
            num_classes=int(logits.shape[1]),
            layers={
                layer.name: LayerInfo(layer.name, layer.kind, layer.shape, layer.order)
                for layer in self._layers.values()
            },
            default_layer=default_graph_layer(graph, self._layers),
            final_linear=None,
            embedding_dim=int(vectors[0].numel()) if vectors is not None else 0,
            activation_bytes=_activation_bytes(inferred),
        )

    @property
    def structure(self) -> ModelStructure:
        return self._structure

    @property
    def embedding_layer(self) -> str | None:
        return self._embedding_layer

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, preferred first."""
        return list(self._session.get_providers())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_embedding=False)[1]

    @property
    def cached_sessions(self) -> int:
        """Layer and head sessions held now (each a copy of the weights), at most twice the cap."""
        with self._lock:
            return len(self._layer_sessions) + len(self._heads)

    def has_tensor(self, name: str) -> bool:
        """Whether some node of the graph outputs a tensor called ``name``."""
        return name in self._tensors

    def layer_tensor(self, layer: str) -> str:
        """The graph tensor a layer (a module name, or a tensor name itself) stands for."""
        found = self._layers.get(layer)
        if found is not None:
            return found.tensor
        if layer in self._tensors:
            return layer
        raise InvalidArgument(f"model {self.name!r}: its graph has no layer or tensor {layer!r}")

    def forward_with_layer(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation and the logits ``(N, C)`` of one onnxruntime run."""
        self._check_input(x)
        tensor = self.layer_tensor(layer)
        with self._lock:
            session = self._layer_sessions.get(tensor)
            if session is None:
                session = self._new_session(with_outputs(self._model, [tensor], self._types))
            _remember(self._layer_sessions, tensor, session)
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        logits, activation = _run_arrays(
            session, self._input, [self._logits, tensor], array, self._dims[0]
        )
        return torch.from_numpy(activation).to(x.device), torch.from_numpy(logits).to(x.device)

    def splits_at(self, layer: str) -> bool:
        """Whether the logits depend on the input only through this layer (graph analysis)."""
        tensor = self.layer_tensor(layer)
        if tensor not in self._splits:
            nodes = head_nodes(self._model.graph, tensor, self._logits)
            self._splits[tensor] = nodes is not None
        return self._splits[tensor] and tensor not in self._unverified

    def head(self, layer: str) -> OnnxHead | None:
        """The graph after ``layer`` as its own session, checked on a probe; None if no split."""
        tensor = self.layer_tensor(layer)
        with self._lock:
            head = self._heads.get(tensor)
        if head is None:
            head = self._build_head(tensor, layer) if self.splits_at(layer) else None
            if head is None:
                return None
        with self._lock:
            _remember(self._heads, tensor, head)
        return head

    def _build_head(self, tensor: str, layer: str) -> OnnxHead | None:
        nodes = head_nodes(self._model.graph, tensor, self._logits)
        assert nodes is not None
        try:
            model = head_model(self._model, nodes, tensor, self._logits)
            head = OnnxHead(self._new_session(model), tensor, self._logits, self._dims[0])
            if self._head_matches(head, layer):
                return head
            log.warning("model %s: the head after %s differs from the graph", self.name, layer)
        except InvalidArgument as exc:
            log.warning("model %s: no head after %s: %s", self.name, layer, exc)
        self._unverified.add(tensor)
        return None

    def _head_matches(self, head: OnnxHead, layer: str) -> bool:
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(2, 3, *self._input_size, generator=generator).to(self.device)
        activation, logits = self.forward_with_layer(probe, layer)
        out = head(activation)
        scale = float(logits.abs().max().clamp_min(1.0))
        return out.shape == logits.shape and bool((out - logits).abs().max() <= 1e-4 * scale)

    def _new_session(self, model: onnx.ModelProto) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(
                model.SerializeToString(),
                _session_options(),
                providers=_providers(self.name, self.device),
            )
        except (RuntimeError, ValueError) as exc:
            raise InvalidArgument(f"model {self.name!r}: onnxruntime cannot run: {exc}") from None

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._embedding is None:
            raise InvalidArgument(f"model {self.name!r}: its ONNX graph has no embedding output")
        vectors, logits = self._run(x, with_embedding=True)
        assert vectors is not None
        return vectors.flatten(1), logits

    def _run(
        self, x: torch.Tensor, *, with_embedding: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        self._check_input(x)
        names = [self._logits] + (
            [self._embedding[0]] if with_embedding and self._embedding else []
        )
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = _run_arrays(self._session, self._input, names, array, self._dims[0])
        logits = torch.from_numpy(outputs[0]).to(x.device)
        vectors = torch.from_numpy(outputs[1]).to(x.device) if len(outputs) > 1 else None
        return vectors, logits

    def _check_input(self, x: torch.Tensor) -> None:
        for axis, expected in ((1, self._dims[1]), (2, self._dims[2]), (3, self._dims[3])):
            if isinstance(expected, int) and expected > 0 and int(x.shape[axis]) != expected:
                shape = ", ".join(
                    str(d) if isinstance(d, int) and d > 0 else "?" for d in self._dims
                )
                raise InvalidArgument(
                    f"model {self.name!r} takes inputs of shape ({shape}); got {tuple(x.shape)}"
                )


class OnnxHead:
    """The graph after a layer, run by its own session: logits ``(N, C)`` from the activation."""

    def __init__(
        self, session: ort.InferenceSession, tensor: str, logits: str, batch: int | str
    ) -> None:
        self._session = session
        self._tensor = tensor
        self._logits = logits
        self._batch = batch

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        array = activation.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = _run_arrays(self._session, self._tensor, [self._logits], array, self._batch)
        return torch.from_numpy(logits).to(activation.device)


def _remember(cache: OrderedDict[str, _Cached], key: str, value: _Cached) -> None:
    """Put ``value`` first in a small most-recently-used cache, dropping the oldest beyond it."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > MAX_CACHED_SESSIONS:
        cache.popitem(last=False)


def _run_arrays(
    session: ort.InferenceSession,
    input_name: str,
    names: list[str],
    array: np.ndarray,
    batch: int | str,
) -> list[np.ndarray]:
    """Run ``session`` on ``array``; a graph with a fixed batch runs in slices of it."""
    if isinstance(batch, int) and batch > 0:
        return _run_fixed_batch(session, input_name, names, array, batch)
    return [np.asarray(o) for o in session.run(names, {input_name: array})]


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """Each dimension: its size, or its symbolic name ('' when unnamed)."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def _check_static_size(name: str, dims: list[int | str], input_size: tuple[int, int]) -> None:
    height, width = dims[2], dims[3]
    if isinstance(height, int) and isinstance(width, int) and (height, width) != input_size:
        raise InvalidArgument(
            f"model {name!r}: the ONNX graph takes {height}x{width} inputs "
            f"but input_size is {input_size[0]}x{input_size[1]}"
        )


def _final_linear_input(graph: onnx.GraphProto, constants: set[str]) -> tuple[str, str] | None:
    """``(tensor, label)``: the data input of the Gemm/MatMul that produces the logits."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = constants | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    node = producers.get(graph.output[0].name)
    while node is not None and node.op_type in ("Add", "Identity"):
        data = [i for i in node.input if i not in constants]
        node = producers.get(data[0]) if len(data) == 1 else None
    if node is None or node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
        return None
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    if node.input[1] not in constants or trans_a:
        return None
    label = node.name or node.output[0]
    return node.input[0], f"{label}:input"


def _infer_at_batch_one(
    model: onnx.ModelProto, input_name: str, input_size: tuple[int, int]
) -> onnx.ModelProto:
    """The graph (without weight values) with every tensor's shape inferred for one sample."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.initializer[:]  # weights are not activations; shapes need no values
    for value in fixed.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, (1, 3, *input_size), strict=True):
                dim.ClearField("dim_param")
                dim.dim_value = size
    weights = {t.name for t in model.graph.initializer}
    kept = [i for i in fixed.graph.input if i.name not in weights]
    del fixed.graph.input[:]
    fixed.graph.input.extend(kept)
    for tensor in model.graph.initializer:  # shapes of the weights, without their bytes
        fixed.graph.input.append(
            helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
        )
    return shape_inference.infer_shapes(fixed)


def _elem_types(inferred: onnx.ModelProto) -> dict[str, int]:
    values = [*inferred.graph.value_info, *inferred.graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in values}


def _activation_bytes(inferred: onnx.ModelProto) -> int:
    """Bytes of every intermediate tensor for one sample (its shapes inferred at batch 1)."""
    total = 0
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        sizes = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor_type.shape.dim]
        if not sizes or min(sizes) <= 0:
            continue
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).itemsize
        total += math.prod(sizes) * itemsize
    return total


def _run_fixed_batch(
    session: ort.InferenceSession, input_name: str, names: list[str], array: np.ndarray, batch: int
) -> list[np.ndarray]:
    """Run a graph exported for a fixed batch in slices of it, the last one zero-padded."""
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, array.shape[0], batch):
        chunk = array[start : start + batch]
        rows = chunk.shape[0]
        if rows < batch:
            pad = np.zeros((batch - rows, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        for index, out in enumerate(session.run(names, {input_name: chunk})):
            parts[index].append(np.asarray(out)[:rows])
    return [np.concatenate(p) for p in parts]


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _providers(name: str, device: torch.device) -> list[str | tuple[str, dict[str, int]]]:
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        log.warning("model %s: onnxruntime has no CUDA provider; running on the CPU", name)
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]

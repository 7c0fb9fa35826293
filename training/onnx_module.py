"""Run an ONNX graph as a trainable PyTorch module, and write trained weights back into it.

The shipped reader is an ONNX graph converted from PaddlePaddle. Fine-tuning it needs gradients,
so this module interprets the graph node by node with torch operators, holding its weights as
parameters. Only the operators that graph uses are implemented; anything else raises, naming
the operator. After training, :func:`write_weights` copies the parameters back into the same
graph: the deployed file keeps the original operators, names and metadata, only its weights
change, so what the agent runs is exactly the graph it ran before with new numbers in it.

Which initializers train: floating-point tensors of more than one element (convolution and
linear weights and biases, layer-norm scales and shifts). Scalars (epsilons, the 0.5 and
sqrt(2) of GELU, exponents) and batch-norm running statistics stay constant.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


class OnnxModule(torch.nn.Module):
    """The graph of ``model`` as a module: ``forward(x)`` returns the logits fed to the last
    Softmax (what a CTC loss wants), :meth:`probabilities` the graph's own output."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self.graph = model.graph
        self.input_name = self.graph.input[0].name
        frozen_inputs = {
            name
            for node in self.graph.node
            if node.op_type == "BatchNormalization"
            for name in node.input[3:5]
        }
        self.param_names: dict[str, str] = {}
        self.constants: dict[str, torch.Tensor] = {}
        for index, init in enumerate(self.graph.initializer):
            array = numpy_helper.to_array(init)
            tensor = torch.from_numpy(np.array(array, copy=True))
            trainable = (
                array.dtype == np.float32 and array.size > 1 and init.name not in frozen_inputs
            )
            if trainable:
                key = f"p{index}"
                self.register_parameter(key, torch.nn.Parameter(tensor))
                self.param_names[init.name] = key
            else:
                self.constants[init.name] = tensor
        self.nodes = list(self.graph.node)
        self.attrs = [_attributes(node) for node in self.nodes]
        last = self.nodes[-1]
        if last.op_type != "Softmax":
            raise ValueError(f"expected the graph to end in Softmax, found {last.op_type}")
        self.logits_name = last.input[0]

    def _run(self, x: torch.Tensor, *, stop_at: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {self.input_name: x}
        values.update(self.constants)
        for name, key in self.param_names.items():
            values[name] = getattr(self, key)
        for node, attrs in zip(self.nodes, self.attrs, strict=True):
            inputs = [values[name] if name else None for name in node.input]
            outputs = _OPS[node.op_type](inputs, attrs) if node.op_type in _OPS else None
            if outputs is None:
                raise NotImplementedError(f"ONNX operator {node.op_type} ({node.name})")
            if not isinstance(outputs, tuple):
                outputs = (outputs,)
            for name, value in zip(node.output, outputs, strict=False):
                values[name] = value
            if stop_at is not None and stop_at in node.output:
                break
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, stop_at=self.logits_name)[self.logits_name]  # type: ignore[no-any-return]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, stop_at=None)[self.graph.output[0].name]  # type: ignore[no-any-return]


def write_weights(module: OnnxModule, model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with the module's trained parameters in place of its initializers."""
    updated = onnx.ModelProto()
    updated.CopyFrom(model)
    for init in updated.graph.initializer:
        key = module.param_names.get(init.name)
        if key is None:
            continue
        array = getattr(module, key).detach().cpu().numpy().astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), init.name))
    return updated


def _ints(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _slice(inputs: list[Any], _attrs: dict[str, Any]) -> Any:
    data, starts, ends = inputs[0], _ints(inputs[1]), _ints(inputs[2])
    axes = (
        _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    )
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * data.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = data.shape[axis]
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(0, min(size, end + size if end < 0 else end))
        index[axis] = slice(start, end, step)
    return data[tuple(index)]


def _reshape(inputs: list[Any], _attrs: dict[str, Any]) -> Any:
    data, shape = inputs[0], _ints(inputs[1])
    shape = [data.shape[i] if dim == 0 else dim for i, dim in enumerate(shape)]
    return data.reshape(shape)


def _same_upper(x: Any, kernel: list[int], strides: list[int], value: float) -> Any:
    """Pad ``x`` as ONNX's ``auto_pad = SAME_UPPER`` does: output size ceil(input / stride),
    the odd pixel at the end."""
    pads = []
    for dim, k, s in zip(x.shape[2:], kernel, strides, strict=True):
        out = math.ceil(dim / s)
        pads.append(max(0, (out - 1) * s + k - dim))
    # F.pad takes the last dimension first.
    return F.pad(
        x, (pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2), value=value
    )


def _is_same_upper(attrs: dict[str, Any]) -> bool:
    return attrs.get("auto_pad", b"NOTSET") in (b"SAME_UPPER", "SAME_UPPER")


def _conv(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x = inputs[0]
    strides = attrs.get("strides", [1, 1])
    if _is_same_upper(attrs):
        x = _same_upper(x, list(inputs[1].shape[2:]), strides, 0.0)
        pads = [0, 0, 0, 0]
    else:
        pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise NotImplementedError(f"asymmetric Conv padding {pads}")
    return F.conv2d(
        x,
        inputs[1],
        inputs[2] if len(inputs) > 2 else None,
        stride=strides,
        padding=(pads[0], pads[1]),
        dilation=attrs.get("dilations", [1, 1]),
        groups=attrs.get("group", 1),
    )


def _max_pool(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    kernel, strides = attrs["kernel_shape"], attrs.get("strides", [1, 1])
    x = inputs[0]
    if _is_same_upper(attrs):
        x = _same_upper(x, kernel, strides, float("-inf"))
    else:
        p = attrs.get("pads", [0, 0, 0, 0])
        x = F.pad(x, (p[1], p[3], p[0], p[2]), value=float("-inf"))
    return F.max_pool2d(x, kernel, strides, ceil_mode=bool(attrs.get("ceil_mode", 0)))


def _avg_pool(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    pads = attrs.get("pads", [0, 0, 0, 0])
    if any(pads):
        raise NotImplementedError(f"AveragePool padding {pads}")
    return F.avg_pool2d(
        inputs[0],
        attrs["kernel_shape"],
        attrs.get("strides", attrs["kernel_shape"]),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def _batch_norm(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


def _squeeze(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x = inputs[0]
    for axis in sorted((a % x.dim() for a in attrs["axes"]), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x = inputs[0]
    for axis in sorted(attrs["axes"]):
        x = x.unsqueeze(axis)
    return x


def _concat(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    return torch.cat(list(inputs), dim=attrs["axis"])


def _reduce_mean(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    return inputs[0].mean(dim=tuple(attrs["axes"]), keepdim=bool(attrs.get("keepdims", 1)))


def _softmax(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x = inputs[0]
    axis = attrs.get("axis", 1) % x.dim()
    if axis != x.dim() - 1:
        raise NotImplementedError("Softmax (opset 11) over other than the last axis")
    return torch.softmax(x, dim=-1)


def _hard_sigmoid(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    return torch.clamp(inputs[0] * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)


_OPS: dict[str, Any] = {
    "Identity": lambda i, a: i[0],
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Erf": lambda i, a: torch.erf(i[0]),
    "Relu": lambda i, a: torch.relu(i[0]),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "HardSigmoid": _hard_sigmoid,
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Transpose": lambda i, a: i[0].permute(*a["perm"]),
    "Shape": lambda i, a: torch.tensor(list(i[0].shape), dtype=torch.int64),
    "Slice": _slice,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "ReduceMean": _reduce_mean,
    "Softmax": _softmax,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
}

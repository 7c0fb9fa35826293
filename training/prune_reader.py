"""Cut the text reader's classifier down to the characters a plate reading can use.

The shipped recogniser classifies each time step into 18 710 classes (Chinese, Japanese,
Korean, Latin and symbols); its last layer alone is 120 x 18 710 weights and most of the
per-step work after the backbone. Plates need [A-Z0-9]. Keeping the CTC blank, the space, and
every printable ASCII character (lowercase and punctuation stay, so that an emblem or dash still
has somewhere to go other than a plate character) gives the same network with a 97-class head:
columns are sliced out of the final MatMul weight and bias, and the ``character`` metadata is
rewritten to match. Softmax then renormalises over the kept classes.

A training-time tool (needs ``onnx``)::

    /tmp/qenv/bin/python training/prune_reader.py \
        "$(python -c 'import rapidocr, pathlib; print(pathlib.Path(rapidocr.__file__).parent)')/models/PP-OCRv6_rec_small.onnx" \
        models/plate_text_reader.onnx
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

KEEP = set(string.ascii_letters + string.digits + string.punctuation)


def prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (the full PP-OCRv6 reader) with its classifier cut to :data:`KEEP`, in place."""
    graph = model.graph
    meta = {entry.key: entry for entry in model.metadata_props}
    characters = meta["character"].value.splitlines()
    # Class 0 is the CTC blank, then one class per metadata line, then the space class.
    keep_chars = [c for c in characters if c in KEEP]
    keep_index = (
        [0] + [1 + i for i, c in enumerate(characters) if c in KEEP] + [len(characters) + 1]
    )
    # Walk back from the output softmax to the classifier's MatMul + Add.
    producers = {out: node for node in graph.node for out in node.output}
    node = producers[graph.output[0].name]
    assert node.op_type == "Softmax", node.op_type
    node = producers[node.input[0]]
    while node.op_type != "Add":
        node = producers[node.input[0]]
    add = node
    matmul = producers[add.input[0]]
    assert matmul.op_type == "MatMul", matmul.op_type
    inits = {init.name: init for init in graph.initializer}
    weight = numpy_helper.to_array(inits[matmul.input[1]])
    bias = numpy_helper.to_array(inits[add.input[1]])
    assert weight.shape[1] == len(characters) + 2, weight.shape
    inits[matmul.input[1]].CopyFrom(
        numpy_helper.from_array(np.ascontiguousarray(weight[:, keep_index]), matmul.input[1])
    )
    inits[add.input[1]].CopyFrom(numpy_helper.from_array(bias[keep_index], add.input[1]))
    meta["character"].value = "\n".join(keep_chars)
    for output in graph.output:
        dims = output.type.tensor_type.shape.dim
        dims[-1].Clear()
        dims[-1].dim_value = len(keep_index)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    model = prune(onnx.load(str(args.source)))
    onnx.save(model, str(args.target))
    print(
        f"kept {model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value} classes; wrote {args.target}"
    )


if __name__ == "__main__":
    main()

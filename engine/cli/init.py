"""``engine init NAME MODEL.onnx…``: a new graph folder whose graph.yaml validates as written.

The models are copied into ``GRAPHS/NAME/``; each becomes a ``model`` node named after its
file. Their inputs and outputs are read from the models themselves (onnxruntime): a model's
input is wired to an earlier model's output of the same name, else to the only output of the
model just before it when datatype and rank agree (a chain), else it becomes a graph input of
that name. Every output no node reads is served. The new graph is then checked exactly as
``engine validate`` checks it, and a README.md says what was generated.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.tensors import TensorSpec

PROG = "engine init"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser("init", help="scaffold a graph folder from ONNX files (validates as written)")
    init.add_argument("name", help="the graph's name: a folder GRAPHS/NAME is created")
    init.add_argument("models", type=Path, nargs="+", metavar="MODEL.onnx", help="models, in reading order")
    init.add_argument("--graphs", type=Path, default=Path("graphs"), help="the repository (default: graphs)")
    init.add_argument("--force", action="store_true", help="write into an existing folder")
    init.set_defaults(run=run_init)


@dataclass(frozen=True)
class _Model:
    node: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def run_init(args: argparse.Namespace) -> int:
    from engine.graph import check_graph
    from engine.interfaces import ModelOptions
    from engine.runtimes.onnx import OnnxRuntimeFactory

    if not _IDENTIFIER.fullmatch(args.name):
        print(f"{PROG}: '{args.name}' is not a graph name (letters, digits, _; not starting with a digit)",
              file=sys.stderr)  # fmt: skip
        return 2
    folder: Path = args.graphs / args.name
    if folder.exists() and not args.force:
        print(f"{PROG}: {folder} already exists (use --force to write into it)", file=sys.stderr)
        return 2
    for path in args.models:
        if not path.is_file():
            print(f"{PROG}: no such model file: {path}", file=sys.stderr)
            return 2
    runtimes = OnnxRuntimeFactory(max_workers=1, warmup_runs=1)
    models: list[_Model] = []
    try:
        for path in args.models:
            try:
                runtime = runtimes.load(path, ModelOptions())
            except ValueError as exc:
                print(f"{PROG}: {path}: {exc}", file=sys.stderr)
                return 1
            signature = runtime.signature
            runtime.close()
            node = _node_name(path.stem, {m.node for m in models})
            models.append(_Model(node, path.name, tuple(signature.inputs), tuple(signature.outputs)))
        folder.mkdir(parents=True, exist_ok=True)
        for path in args.models:
            if path.resolve() != (folder / path.name).resolve():
                shutil.copyfile(path, folder / path.name)
        text = graph_yaml(args.name, models)
        (folder / "graph.yaml").write_text(text)
        (folder / "README.md").write_text(_readme(args.name, models))
        diagnostics = check_graph(
            text, filename=str(folder / "graph.yaml"), graph_dir=folder, runtimes=runtimes
        )
    finally:
        runtimes.close()
    print(f"wrote {folder / 'graph.yaml'}, {folder / 'README.md'} and {len(models)} model(s)")
    for diagnostic in diagnostics:
        print(diagnostic)
    errors = sum(d.severity == "error" for d in diagnostics)
    if errors:
        return 1
    print(f"{folder / 'graph.yaml'}: ok (engine validate {folder}; engine graph run {folder} --input …)")
    return 0


def _node_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "model"
    if base[0].isdigit() or base == "inputs":
        base = f"m_{base}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _fits(out: TensorSpec, want: TensorSpec) -> bool:
    """Whether ``out`` can feed ``want``: same datatype and rank, fixed sizes beyond the batch agree."""
    if out.datatype != want.datatype or len(out.shape) != len(want.shape):
        return False
    return all(a == b or -1 in (a, b) for a, b in zip(out.shape[1:], want.shape[1:], strict=True))


def _same(a: TensorSpec, b: TensorSpec) -> bool:
    return a.datatype == b.datatype and a.shape[1:] == b.shape[1:]


def _shape(spec: TensorSpec) -> str:
    dims = [-1 if i == 0 else d for i, d in enumerate(spec.shape)]  # the first dimension is the batch
    return "[" + ", ".join(str(d) for d in dims) + "]"


def graph_yaml(name: str, models: list[_Model]) -> str:
    """The graph.yaml text: graph inputs, one node per model wired as the module docstring says,
    and every output no node reads."""
    produced: dict[str, str] = {}  # tensor name -> "node.tensor" (the first model giving it)
    outputs: dict[str, TensorSpec] = {}  # "node.tensor" -> its spec
    graph_inputs: dict[str, TensorSpec] = {}
    wiring: list[list[tuple[str, str]]] = []
    read: set[str] = set()
    for k, model in enumerate(models):
        wires: list[tuple[str, str]] = []
        previous = models[k - 1] if k else None
        for want in model.inputs:
            ref = produced.get(want.name)
            if ref is not None and not _fits(outputs[ref], want):
                ref = None
            chained = previous is not None and len(previous.outputs) == 1 and len(model.inputs) == 1
            if ref is None and chained and previous is not None and _fits(previous.outputs[0], want):
                ref = f"{previous.node}.{previous.outputs[0].name}"
            if ref is None:
                input_name = base = _node_name(want.name, set())
                n = 2
                while input_name in graph_inputs and not _same(graph_inputs[input_name], want):
                    input_name, n = f"{base}_{n}", n + 1
                graph_inputs.setdefault(input_name, want)  # models taking the same input share it
                ref = f"inputs.{input_name}"
            read.add(ref)
            wires.append((want.name, ref))
        wiring.append(wires)
        for out in model.outputs:
            produced.setdefault(out.name, f"{model.node}.{out.name}")
            outputs[f"{model.node}.{out.name}"] = out
    lines = [
        f"# Generated by `engine init` from {', '.join(m.file for m in models)}; edit freely.",
        "# The language: docs/graph-language.md. Check with `engine validate`, try with `engine graph run`.",
        f"graph: {name}",
        "version: 1",
        "inputs:",
    ]
    for input_name, spec in graph_inputs.items():
        lines.append(f"  {input_name}: {{datatype: {spec.datatype.value}, shape: {_shape(spec)}}}")
    lines.append("nodes:")
    for model, wires in zip(models, wiring, strict=True):
        shown = ", ".join(f"{_key(onnx)}: {ref}" for onnx, ref in wires)
        lines.append(f"  {model.node}:")
        lines.append(f"    model: {model.file}")
        lines.append(f"    inputs: {{{shown}}}")
    lines.append("outputs:")
    served: set[str] = set()
    for model in models:
        for out in model.outputs:
            ref = f"{model.node}.{out.name}"
            if ref in read:
                continue
            served_name = out.name if out.name not in served else f"{model.node}_{out.name}"
            served.add(served_name)
            lines.append(f"  {_key(served_name)}: {ref}")
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    """A YAML mapping key, quoted when it is not plain text."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:/-]*", name) else '"' + name.replace('"', '\\"') + '"'


def _readme(name: str, models: list[_Model]) -> str:
    rows = []
    for m in models:
        ins = ", ".join(f"{t.name} {t.datatype.value} {t.shape_text()}" for t in m.inputs)
        outs = ", ".join(f"{t.name} {t.datatype.value} {t.shape_text()}" for t in m.outputs)
        rows.append(f"| `{m.node}` | `{m.file}` | {ins} | {outs} |")
    return (
        f"# {name}\n\nGenerated by `engine init`. The models, as onnxruntime reads them:\n\n"
        "| node | file | inputs | outputs |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )

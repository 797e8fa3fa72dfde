"""Model files of a graph: path checks or fetching, then one load per distinct file.

A ``model:`` path is relative to the graph folder and must stay inside it:
no absolute paths, no ``..``, no symlink that resolves outside, and no hard-linked file.
A ``model:`` reference (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, a pinned ``https://``
URL) is fetched through the ``ModelSource`` into its digest-checked cache first, then loaded the
same way. Each distinct file is loaded once through the ``RuntimeFactory``; a fetch or load
failure is a diagnostic at the ``model:`` value. Loaded runtimes are returned so the
caller can close them when the graph is rejected or unloaded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from engine.graph.reading.batching_reader import batch_dimension_problem
from engine.graph.values.diagnostics import Report, did_you_mean
from engine.graph.values.spec import ModelNode
from engine.interfaces import (
    BatchingOptions,
    ModelArtifact,
    ModelOptions,
    ModelRuntime,
    ModelSource,
    RuntimeFactory,
    is_model_reference,
)


@dataclass
class ModelFiles:
    """The models a graph uses, keyed by their path relative to the graph folder (or their reference)."""

    graph_dir: Path
    runtimes: RuntimeFactory
    report: Report
    sources: ModelSource | None = None  # fetches references; None: a reference is an error
    loaded: dict[str, ModelRuntime] = field(default_factory=dict)
    artifacts: dict[str, ModelArtifact] = field(default_factory=dict)  # by reference, once fetched
    failed: set[str] = field(default_factory=set)
    _options: dict[str, tuple[ModelOptions, str]] = field(default_factory=dict)

    def close_all(self) -> None:
        for runtime in self.loaded.values():
            with contextlib.suppress(Exception):  # best effort: the graph is being discarded
                runtime.close()
        self.loaded.clear()

    def load(self, node: ModelNode, *, shadow: bool = False) -> tuple[str, ModelRuntime] | None:
        """The runtime for ``node`` (loaded on first use), or None after reporting why not.

        ``shadow``: a shadow node's candidate (never inline, in the runtimes' shadow pool)."""
        where = node.common.kind_pos
        located = self._locate(node)
        if located is None:
            return None
        relative, file = located
        options = ModelOptions(
            intra_op_threads=node.threads, execution=node.execution, batching=_batching(node), shadow=shadow
        )
        if relative in self._options:
            first_options, first_node = self._options[relative]
            if first_options != options:
                self.report.error(
                    where,
                    f"model '{relative}' is also used by node '{first_node}' with other "
                    f"threads/execution/batching ({_shown(first_options)} vs {_shown(options)}); one file is "
                    "loaded once, so give both nodes the same settings",
                )
                return None
        else:
            self._options[relative] = (options, node.common.name)
        if relative in self.failed:
            return None
        if relative in self.loaded:
            return relative, self.loaded[relative]
        try:
            runtime = self.runtimes.load(file, options)
        except Exception as exc:  # any loader failure is the modeller's to fix: report it, keep going
            self.failed.add(relative)
            text = str(exc)  # the runtime's own "cannot load model 'x.onnx': …" is not said twice
            if text.startswith("cannot ") or f"'{PurePosixPath(relative).name}'" in text:
                self.report.error(where, text)
            else:
                self.report.error(where, f"cannot load model '{relative}': {text}")
            return None
        self.loaded[relative] = runtime
        if node.sha256 is not None and runtime.sha256 != node.sha256:
            self.report.error(
                where, f"model '{relative}' has sha256 {runtime.sha256}, not the pinned {node.sha256}"
            )
            self.failed.add(relative)
            return None
        if node.batching is not None and (problem := batch_dimension_problem(runtime.signature)):
            self.report.error(
                node.batching.pos,
                f"model '{relative}' cannot batch: {problem}; remove 'batching' or export the model "
                "with a dynamic (-1) batch dimension",
            )
            self.failed.add(relative)
            return None
        return relative, runtime

    def _locate(self, node: ModelNode) -> tuple[str, Path] | None:
        """(the model's key, the local file to load) or None after reporting why there is none."""
        if not is_model_reference(node.path):
            relative = self._relative(node)
            return None if relative is None else (relative, self.graph_dir / relative)
        reference = node.path
        if reference in self.artifacts:
            return reference, self.artifacts[reference].path
        if reference in self.failed:
            return None
        if self.sources is None:
            self.report.error(
                node.common.kind_pos,
                f"model '{reference}' is a reference, and no model source is configured here",
            )
            self.failed.add(reference)
            return None
        try:
            artifact = self.sources.fetch(reference, node.sha256)
        except (
            ValueError
        ) as exc:  # unreachable registry, unknown alias, digest mismatch: the reference is named
            self.report.error(node.common.kind_pos, f"cannot fetch model '{reference}': {exc}")
            self.failed.add(reference)
            return None
        self.artifacts[reference] = artifact
        return reference, artifact.path

    def _relative(self, node: ModelNode) -> str | None:
        text = node.path
        where = node.common.kind_pos
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("\\"):
            self.report.error(where, f"model path '{text}' must be relative to the graph folder")
            return None
        parts = PurePosixPath(text.replace("\\", "/")).parts
        if ".." in parts:
            self.report.error(
                where, f"model path '{text}' must stay inside the graph folder ('..' is not allowed)"
            )
            return None
        relative = PurePosixPath(*parts).as_posix() if parts else ""
        root = self.graph_dir.resolve()
        target = (self.graph_dir / relative).resolve()
        if not target.is_relative_to(root):
            self.report.error(
                where,
                f"model path '{text}' resolves outside the graph folder (through a symlink) to '{target}'",
            )
            return None
        if not target.is_file():
            siblings = sorted(p.name for p in root.glob("*.onnx")) if root.is_dir() else []
            hint = did_you_mean(PurePosixPath(relative).name, siblings)
            self.report.error(where, f"model file '{relative}' not found in the graph folder{hint}")
            return None
        links = target.stat().st_nlink
        if links > 1:  # another name for the same bytes may live outside the folder: refuse to guess
            self.report.error(
                where,
                f"model file '{relative}' has {links} hard links; a hard link can bring in a file from "
                "outside the graph folder, so copy the model into the folder instead",
            )
            return None
        return relative


def _batching(node: ModelNode) -> BatchingOptions | None:
    spec = node.batching
    if spec is None:
        return None
    return BatchingOptions(spec.max_batch_size, spec.max_queue_delay_s, spec.preferred_batch_sizes)


def _shown(options: ModelOptions) -> str:
    batching = options.batching
    shown = (
        "no batching"
        if batching is None
        else f"batching {batching.max_batch_size} rows, {batching.max_queue_delay_s * 1000:g} ms, "
        f"preferred {list(batching.preferred_batch_sizes)}"
    )
    role = "/shadow candidate" if options.shadow else ""
    return f"{options.intra_op_threads}/{options.execution}/{shown}{role}"

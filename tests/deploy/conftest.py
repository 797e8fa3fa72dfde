"""Rendered deploy/k8s trees, shared by the manifest tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import kustomize

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "monitoring", "otel-collector", "overlays/example"]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[kustomize.Manifest]]:
    return {name: kustomize.build(K8S / name) for name in KUSTOMIZATIONS}

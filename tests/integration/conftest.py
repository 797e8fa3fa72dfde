from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from tests.server_thread import ServerThread


@pytest.fixture(scope="module")
def server(example_graphs: Path) -> Iterator[ServerThread]:
    with ServerThread(example_graphs) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()

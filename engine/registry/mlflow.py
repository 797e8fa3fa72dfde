"""An MLflow model registry over its REST API (no mlflow package at run time).

    alias -> version   GET /api/2.0/mlflow/registered-models/alias?name=&alias=
    version            GET /api/2.0/mlflow/model-versions/get?name=&version=
    where its files are GET /api/2.0/mlflow/model-versions/get-download-uri?name=&version=
    the files          GET /api/2.0/mlflow-artifacts/artifacts?path=   (list, proxied artifacts)
                       GET /api/2.0/mlflow-artifacts/artifacts/<path>  (download)

The artifacts are read through the tracking server's artifact proxy (``mlflow server`` serves
them by default), so the engine needs no object-store credentials. A model version is a folder:
its ``MLmodel`` file names the ONNX file (``flavors.onnx.data``); without one, the folder's only
``.onnx`` file is the model. Credentials come from the environment only, under MLflow's own names:
``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``.
Every failure becomes a ``ValueError`` naming the reference, never the server's address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import yaml

from engine.registry.references import RegistryReference


class RegistryUnreachable(ValueError):
    """The registry did not answer (connection refused, timeout, a 5xx): nothing is known about the
    reference, as opposed to the registry saying it does not exist."""


API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
CHUNK = 1 << 20


class MlflowRegistry:
    def __init__(
        self, tracking_uri: str, *, timeout_s: float = 10.0, environ: Mapping[str, str] | None = None
    ) -> None:
        if urlsplit(tracking_uri).scheme not in ("http", "https"):
            raise ValueError("model_registry.mlflow.tracking_uri must be an http:// or https:// URL")
        env = os.environ if environ is None else environ
        headers: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        if env.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        elif env.get("MLFLOW_TRACKING_USERNAME"):
            auth = (env["MLFLOW_TRACKING_USERNAME"], env.get("MLFLOW_TRACKING_PASSWORD", ""))
        self.tracking_uri = tracking_uri.rstrip("/")
        self._client = httpx.Client(
            base_url=self.tracking_uri, headers=headers, auth=auth, timeout=timeout_s, follow_redirects=False
        )

    def close(self) -> None:
        self._client.close()

    # -- the registry --------------------------------------------------------------------------
    def version_of(self, ref: RegistryReference) -> str:
        """The version ``ref`` names now: its own, or the one its alias points at."""
        if not ref.alias:
            return ref.version
        body = self._get_json(ref, f"{API}/registered-models/alias", {"name": ref.name, "alias": ref.alias})
        version = str(body.get("model_version", {}).get("version", ""))
        if not version.isdigit():
            raise ValueError(f"registry answered for '{ref.text}' without a version")
        return version

    def download(self, ref: RegistryReference) -> Iterator[bytes]:
        """The ONNX file of version ``ref`` (an immutable reference), as chunks."""
        params = {"name": ref.name, "version": ref.version}
        version = self._get_json(ref, f"{API}/model-versions/get", params).get("model_version", {})
        status = version.get("status", "READY")
        if status != "READY":
            raise ValueError(f"registry model '{ref.text}' is not ready (status {status})")
        uri = str(
            self._get_json(ref, f"{API}/model-versions/get-download-uri", params).get("artifact_uri", "")
        )
        root = _proxied_path(ref, uri)
        file = self._onnx_file(ref, root)
        return self._stream(ref, f"{root}/{file}" if file else root)

    # -- the artifact proxy --------------------------------------------------------------------
    def _onnx_file(self, ref: RegistryReference, root: str) -> str:
        if root.endswith(".onnx"):  # the version's source is the file itself
            return ""
        listing = self._get_json(ref, ARTIFACTS, {"path": root}).get("files", [])
        names = {PurePosixPath(str(f.get("path", ""))).name for f in listing if not f.get("is_dir")}
        if "MLmodel" in names:
            text = b"".join(self._stream(ref, f"{root}/MLmodel")).decode("utf-8", "replace")
            meta = yaml.safe_load(text)
            onnx = meta.get("flavors", {}).get("onnx", {}) if isinstance(meta, dict) else {}
            data = str(onnx.get("data", "")) if isinstance(onnx, dict) else ""
            parts = PurePosixPath(data).parts
            if not data or ".." in parts or PurePosixPath(data).is_absolute():
                raise ValueError(
                    f"registry model '{ref.text}' is not an ONNX model (no onnx flavor in MLmodel)"
                )
            return PurePosixPath(*parts).as_posix()
        onnx_files = sorted(n for n in names if n.endswith(".onnx"))
        if len(onnx_files) != 1:
            found = "no .onnx file" if not onnx_files else f"{len(onnx_files)} .onnx files"
            raise ValueError(f"registry model '{ref.text}' has {found} and no MLmodel naming one")
        return onnx_files[0]

    def _stream(self, ref: RegistryReference, path: str) -> Iterator[bytes]:
        url = f"{ARTIFACTS}/{quote(path.strip('/'))}"
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()  # the error body, to tell a missing file from a refusal
                _check(ref, response)
                yield from response.iter_bytes(CHUNK)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"model registry did not deliver '{ref.text}' ({type(exc).__name__})"
            ) from exc

    def _get_json(self, ref: RegistryReference, url: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"model registry unreachable for '{ref.text}' ({type(exc).__name__})"
            ) from exc
        _check(ref, response)
        try:
            body = response.json()
        except ValueError as exc:
            raise ValueError(f"model registry answered '{ref.text}' with something other than JSON") from exc
        return body if isinstance(body, dict) else {}


def _check(ref: RegistryReference, response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.status_code in (401, 403):
        raise ValueError(
            f"model registry refused '{ref.text}' (HTTP {response.status_code}): set MLFLOW_TRACKING_TOKEN "
            "or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
        )
    if (
        response.status_code == 404
        or _error_code(response) == "RESOURCE_DOES_NOT_EXIST"
        or (ref.alias and "alias" in _error_message(response))
    ):
        what = f"alias '{ref.alias}'" if ref.alias else f"version {ref.version}"
        raise ValueError(f"registry model '{ref.name}' has no {what} (or its files are missing)")
    failed = RegistryUnreachable if response.status_code >= 500 else ValueError
    raise failed(f"model registry failed on '{ref.text}' (HTTP {response.status_code})")


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error_code", "")) if isinstance(body, dict) else ""


def _error_message(response: httpx.Response) -> str:
    """MLflow's error message, only to tell kinds of errors apart (never shown: it may hold names)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message", "")).lower() if isinstance(body, dict) else ""


def _proxied_path(ref: RegistryReference, uri: str) -> str:
    """The artifact proxy path of a download URI (``mlflow-artifacts:/1/models/m-1/artifacts``)."""
    parts = urlsplit(uri)
    if parts.scheme != "mlflow-artifacts":
        raise ValueError(
            f"registry model '{ref.text}' is stored where the engine cannot read it "
            f"({parts.scheme or 'a local path'}); serve artifacts through the tracking server "
            "(`mlflow server --serve-artifacts`, the default)"
        )
    return parts.path.strip("/")

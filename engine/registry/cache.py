"""The content-addressed model cache: every downloaded model stored under its sha256.

    <root>/sha256/<hex>.onnx     the verified bytes (written to a temporary file, hashed while
                                 written, renamed into place only when the digest is right)
    <root>/refs/<key>            the digest an immutable reference was found to have
                                 (``models:/fraud/3`` at one registry), so it is fetched once;
                                 and the version an alias last named, for when the registry is down

Several processes (``--workers``) may share the folder: every write is a rename of a complete
file, so a reader sees either nothing or the whole file, and two writers write the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalise_digest(text: str) -> str:
    """A ``sha256:`` pin as lowercase hex (an optional ``sha256:`` prefix is allowed)."""
    digest = text.strip().lower().removeprefix("sha256:")
    if not _HEX.match(digest):
        raise ValueError("a sha256 pin must be 64 hexadecimal digits")
    return digest


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, digest: str) -> Path:
        return self.root / "sha256" / f"{digest}.onnx"

    def has(self, digest: str) -> Path | None:
        """The cached file of ``digest`` if it is there and still has that digest."""
        path = self.path_of(digest)
        if not path.is_file():
            return None
        if _file_digest(path) != digest:  # damaged on disk: drop it so it is fetched again
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return path

    def store(self, chunks: Iterable[bytes], *, expect: str | None = None) -> tuple[str, Path]:
        """Write ``chunks`` into the cache; (digest, path). ``ValueError`` when ``expect`` is given
        and the bytes have another digest (nothing is kept then)."""
        folder = self.root / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
            found = digest.hexdigest()
            if expect is not None and found != expect:
                raise ValueError(f"has sha256 {found}, not the pinned {expect}")
            path = self.path_of(found)
            os.replace(temporary, path)
            return found, path
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def remembered(self, key: str) -> str | None:
        """The digest recorded for immutable reference ``key``, when its file is still cached."""
        digest = self.recall(key)
        return digest if digest and _HEX.match(digest) and self.path_of(digest).is_file() else None

    def remember(self, key: str, digest: str) -> None:
        self.note(key, digest)

    def recall(self, key: str) -> str | None:
        """The text last noted under ``key``, if any."""
        try:
            return (self.root / "refs" / _key_file(key)).read_text().strip() or None
        except OSError:
            return None

    def note(self, key: str, text: str) -> None:
        folder = self.root / "refs"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / _key_file(key)
        if self.recall(key) == text:
            return
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".partial-")
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, target)


def _key_file(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""``models:/NAME/VERSION`` and ``models:/NAME@ALIAS``: MLflow's model URIs, parsed once."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "models:/"


@dataclass(frozen=True, slots=True)
class RegistryReference:
    """A registered model and either a version number or an alias (exactly one of them)."""

    name: str
    version: str = ""
    alias: str = ""

    @property
    def text(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias}" if self.alias else f"{PREFIX}{self.name}/{self.version}"

    def at(self, version: str) -> RegistryReference:
        """The immutable reference to ``version`` of the same model."""
        return RegistryReference(self.name, version=version)


def parse_registry_reference(text: str) -> RegistryReference:
    """The reference ``text`` names; ``ValueError`` saying what a valid one looks like otherwise."""
    if not text.startswith(PREFIX):
        raise ValueError(f"'{text}' is not a registry reference (models:/NAME/VERSION or models:/NAME@ALIAS)")
    rest = text[len(PREFIX) :]
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in alias and "/" not in name:
            return RegistryReference(name, alias=alias)
    else:
        name, _, version = rest.rpartition("/")
        if name and "/" not in name and version.isdigit() and int(version) > 0:
            return RegistryReference(name, version=str(int(version)))
    raise ValueError(
        f"registry reference '{text}' must be models:/NAME/VERSION (a version number) or models:/NAME@ALIAS"
    )

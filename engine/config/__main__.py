"""``python -m engine.config``: print docs/configuration.md as the declarations make it."""

from engine.config.reference import markdown_document

print(markdown_document(), end="")

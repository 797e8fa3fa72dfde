"""``python -m engine.config``: print docs/configuration.md as the declarations make it;
``--schema``: print schemas/engine.schema.json instead."""

import sys

if sys.argv[1:] == ["--schema"]:
    from engine.config.schema import schema_text

    print(schema_text(), end="")
else:
    from engine.config.reference import markdown_document

    print(markdown_document(), end="")

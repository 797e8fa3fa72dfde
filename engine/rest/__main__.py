"""``python -m engine.rest > docs/openapi.json``: the REST door's OpenAPI document."""

import sys

from engine.rest.routes import openapi_bytes

sys.stdout.write(openapi_bytes().decode())

"""Generated stubs (written by proto/generate.py; do not edit)."""

"""Server settings: each declared once (``settings.py``), everything else derived from the declarations."""

from engine.config.declaration import Setting, setting
from engine.config.files import REPOSITORY_CONFIG, repository_config
from engine.config.flags import add_setting_flags, flag_values
from engine.config.reference import markdown_document, markdown_table
from engine.config.settings import SETTINGS, ServeSettings, read_config_file

__all__ = [
    "REPOSITORY_CONFIG",
    "SETTINGS",
    "ServeSettings",
    "Setting",
    "add_setting_flags",
    "flag_values",
    "markdown_document",
    "markdown_table",
    "read_config_file",
    "repository_config",
    "setting",
]

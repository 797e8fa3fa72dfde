"""``python -m engine.cli``: the ``engine`` command."""

import sys

from engine.cli.command import main

sys.exit(main())

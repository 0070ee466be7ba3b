"""``python -m inboxlens`` is the ``inboxlens`` command."""

import sys

from .cli import main

sys.exit(main())

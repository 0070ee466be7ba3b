"""``python -m inboxlens`` is the ``inboxlens`` command."""

import sys

from inboxlens.cli import main

sys.exit(main())

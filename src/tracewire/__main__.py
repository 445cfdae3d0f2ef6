"""``python -m tracewire`` runs the ``tracewire`` command."""

import sys

from tracewire.cli import main

sys.exit(main())

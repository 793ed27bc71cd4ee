"""``python -m stridenet`` runs the command line."""

import sys

from stridenet.cli import main

sys.exit(main())

"""``python -m mambaseg`` runs the command line (also under torchrun)."""

import sys

from mambaseg.cli.main import main

sys.exit(main())

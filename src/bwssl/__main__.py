"""``python -m bwssl`` (used by torchrun) runs the command line."""

import sys

from bwssl.cli import main

sys.exit(main())

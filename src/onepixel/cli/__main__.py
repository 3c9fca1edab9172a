"""``python -m onepixel.cli``."""

import sys

from onepixel.cli.main import main

sys.exit(main())

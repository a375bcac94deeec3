"""``python -m apts.report``: the apts-report command line."""

import sys

from apts.report.cli import main

sys.exit(main())

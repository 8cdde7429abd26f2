"""``python -m tenure_cli``: the same as the ``tenure`` script."""

import sys

from tenure_cli.command import main

sys.exit(main())

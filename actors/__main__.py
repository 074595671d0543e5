"""`python -m actors` is `ipc-router`."""

import sys

from actors.cli import main

sys.exit(main())

"""`python -m actors` is `ipc-router`."""

import sys

from actors.entry import main

sys.exit(main())

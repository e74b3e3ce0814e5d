"""``python -m tljob.cli ...``: the ``tljob`` command."""

import sys

from tljob.cli import main

sys.exit(main())

"""``python -m jrnn``: the ``jrnn`` command (see :mod:`jrnn.cli`)."""

import sys

from jrnn.cli import main

if __name__ == "__main__":
    sys.exit(main())

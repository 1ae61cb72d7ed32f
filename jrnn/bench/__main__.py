"""``python -m jrnn.bench``: see :mod:`jrnn.bench`."""

from jrnn.bench.cli import main

if __name__ == "__main__":
    main()

"""PyInstaller entry script for the frozen ``weft`` (PyInstaller wants a file, not ``-m``).

Same as ``python -m cni``: the console script ``weft = cni.__main__:main``.
"""

import sys

from cni.__main__ import main

sys.exit(main())

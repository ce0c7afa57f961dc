"""weft's stand-in for PyInstaller's ``pyimod03_ctypes`` bootstrap module (see weft.spec).

PyInstaller's bootstrap imports ``ctypes`` on every start, ``_ctypes`` and libffi with it,
to make ``ctypes.CDLL`` look for a library in the bundle before the system's. weft loads no
library of its own through ctypes: only the running libc, by ``ctypes.CDLL(None)``
(``cni/linux/netns.py``), which that hook hands through unchanged. So the hook does nothing for
weft, while importing ctypes at start-up is paid by every exec, VERSION and the helper's
client included; with this module ctypes loads only when a command uses it.
"""


def install() -> None:
    """Nothing to install: see the module docstring."""

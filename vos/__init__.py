"""User-facing layer of seggpt-vos: the ``vos`` CLI, DAVIS I/O, prompt memory and J&F metrics.

Importing :mod:`vos` is cheap: torch, av and ray are imported only by the submodules that need them.
"""

__version__ = "0.1.0"

"""User-facing layer of seggpt-vos: the ``vos`` CLI, prompt memory, first masks from words, DAVIS
I/O, J&F metrics and batch jobs (the top layer; see ``docs/architecture.md``).

Importing :mod:`vos` is cheap: torch, av and ray are imported only by the submodules that need them.
"""

__version__ = "0.1.0"

"""The ``ncfast`` command: ``main`` (parser and errors), one module per command (``score``,
``rank``, ``files`` for stats/merge), what they share (``common``) and print (``output``),
and ``python -m ncfast`` (``demo``)."""

from .main import main

__all__ = ["main"]

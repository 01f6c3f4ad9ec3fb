"""The ``ncfast`` command (``main``), its figures (``plots``) and ``python -m ncfast`` (``demo``)."""

from .main import main

__all__ = ["main"]

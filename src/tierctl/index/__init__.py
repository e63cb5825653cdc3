"""The SQLite index: where every object of every dataset lives."""

from tierctl.index.db import Index

__all__ = ["Index"]

"""The storage contract (:class:`Mover`) and its implementations.

Movers know nothing of the index, policies or plans; only :mod:`.registry` looks at URL
schemes.
"""

from tierctl.movers.base import Capabilities, Mover
from tierctl.movers.registry import open_mover

__all__ = ["Capabilities", "Mover", "open_mover"]

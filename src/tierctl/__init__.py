"""tierctl: data sync and tiering with a policy engine."""

__version__ = "0.1.0.dev0"

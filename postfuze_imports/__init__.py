"""PostFuze Imports API: background imports of a social account's past posts."""

__version__ = "0.1.0"

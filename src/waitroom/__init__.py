"""waitroom: a virtual waiting room and rate limiter, as a mitmproxy addon."""

__version__ = "0.1.0"

"""The `clusterra` command: talks to the console over HTTP with requests; never imports Django."""

__version__ = "0.1.0"

"""lane-agent: the daemon that runs on every inspection lane of a land port of entry."""

__version__ = "0.1.0"

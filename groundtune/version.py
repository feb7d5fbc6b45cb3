"""The package version, in a module of its own: the modules that record it (adapters, metric signatures)
read it here, not from the package root, whose lazy public API imports nearly everything."""

__version__ = "0.1.0"

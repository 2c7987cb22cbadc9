"""lab: a Django deployment workshop's production stack, built on one machine."""

__version__ = "0.1.0"

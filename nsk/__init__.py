"""nsk: Kubernetes Service networking emulated on one Linux host with the real kernel."""

__version__ = "0.1.0"

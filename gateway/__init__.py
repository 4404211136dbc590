"""nfmesh control plane and program: config, CLI, registry + NRF API, CA, metrics, wiring."""

__version__ = "0.1.0"

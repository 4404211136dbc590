"""nfmesh tests."""

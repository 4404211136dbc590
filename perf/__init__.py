"""Traffic generators, emulated NFs and gNBs, the peer comparison harness and reports."""

"""Device conformance suite: docs/protocol.md against the simulator and the C device."""

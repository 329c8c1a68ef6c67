"""Lab Streaming Layer plumbing: configuration, acquisition, outlets, the ``streams`` command."""

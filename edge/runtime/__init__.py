"""The running service: frame loops, status, systemd notify, audit, hardening, metrics endpoint."""

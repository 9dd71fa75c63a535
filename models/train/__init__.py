"""Training recipes for the project's own detectors (tooling: never imported by the runtime path)."""

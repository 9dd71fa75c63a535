"""Model cards and weights: resolution and verification by sha256 (registry), fetching (fetch)."""

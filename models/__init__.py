"""Model cards (*.toml) and, in models/train, the recipe that trains our own detectors."""

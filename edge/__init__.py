"""edge: on-vehicle anonymizer. Frames in, faces and plates masked in memory, clean frames out."""
__version__ = "0.1.0"

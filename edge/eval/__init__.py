"""Evaluation and clip generation: used by tools and the `eval` subcommand, never imported by the runtime."""

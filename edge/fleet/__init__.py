"""Fleet-scale re-anonymization of recorded drives on Ray (`edge-anon batch`): tooling, never imported by the runtime."""

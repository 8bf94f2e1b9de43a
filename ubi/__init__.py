"""Usage-based insurance: trips, driving events, scores (see ``docs/`` and DESIGN.md)."""

"""Model backends: loading, running and building checkpoints for every model role. No Dagster here."""

"""Post-training, evaluation, promotion and lineage (plain modules; the assets module is the Dagster layer)."""

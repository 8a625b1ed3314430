"""Small Dagster-free helpers shared by every stage: files, hashing, pictures."""

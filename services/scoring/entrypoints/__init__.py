"""The scoring worker's thin entrypoints: what its agents and timer do with their input."""

"""Many slides: the runs around the one-slide pipeline (filled in below)."""

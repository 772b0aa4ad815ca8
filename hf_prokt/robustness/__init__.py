"""What keeps a run from losing work or training on garbage: the non-finite guard, crash-safe checkpoints, and a
checkpoint on SIGTERM."""

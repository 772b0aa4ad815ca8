"""What keeps a run from losing work or training on garbage: the non-finite guard and crash-safe checkpoints."""

"""The teacher's rooms: its persistence (checkpoints, FSDP2, save, push), its evaluation beside the student, and
the logit cache that replaces a frozen teacher during training."""

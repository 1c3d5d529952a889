"""The training loop and what it needs only while training: optimizer, schedule, resume."""

"""config.list: its keys, the default recipe, reading and resolving a run's settings."""

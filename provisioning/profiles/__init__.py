"""Built-in tuning profiles (TOML data files, read with importlib.resources)."""

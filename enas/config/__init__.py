"""Configuration: dataclass defaults -> config file -> CLI flags, validated (README "Configuration")."""

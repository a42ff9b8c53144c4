"""Configuration layer: pydantic models and the YAML loader. No I/O beyond reading the recipe."""

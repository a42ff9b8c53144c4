"""Model access: backends, request cache, limits, retries and usage, per role."""

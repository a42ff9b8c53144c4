"""Task plugins: one module per task (seed schema, simulator brief, extrinsic metric)."""

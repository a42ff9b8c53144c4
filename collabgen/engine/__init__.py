"""Engine layer: seeds, the collaboration loop, scoring, journal, and the run itself."""

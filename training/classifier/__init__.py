"""The crop classifier: which sign a crop shows (43 GTSRB classes + other) and its speed value."""

"""Training the built-in tiny reasoner (development only, not in the wheel)."""

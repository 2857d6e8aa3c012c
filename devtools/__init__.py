"""Development-only helpers shared by tests/ and train/ (fixture builders that need torch);
they live in the source tree and are not part of the wheel."""

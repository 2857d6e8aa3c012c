"""The built-in tiny reasoner: synthetic tasks with step-by-step traces, their prompts, and the
held-out evaluation (`edgenano eval`). Its training data and script live in train/."""

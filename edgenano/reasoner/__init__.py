"""The built-in tiny reasoner: synthetic tasks with step-by-step traces, chat-format training
data, and the held-out evaluation (`edgenano eval`)."""

"""The one exception the converter raises for user-facing problems (bad input, unsupported
model)."""


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message says what is wrong and what to do."""

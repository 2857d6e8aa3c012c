"""The exceptions the converter raises for user-facing problems (bad input, unsupported model,
an output that cannot be written)."""


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message says what is wrong and what to do."""


class OutputError(ConversionError):
    """The output cannot be written (read-only directory, full disk, I/O error); nothing was left
    behind. The command line exits 1 for it, 2 for the other ConversionErrors (bad input)."""

"""The error type for bad user input that the CLI reports as one line."""


class UserError(ValueError):
    """Bad input from the user (file, flag, shape, value); the message says what and how to fix."""

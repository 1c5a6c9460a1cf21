"""The error types for bad user input that the CLI reports as one line."""


class UserError(ValueError):
    """Bad input from the user (file, flag, shape, value); the message says what and how to fix."""


class UndefinedMetric(UserError):
    """A metric has no value for this table (isotropy with n_items <= d, a silhouette of identical
    rows, ...); the message says why. A metric function called alone raises it like any UserError;
    ``collapse_kit.analyze`` reports the metric as null with this message and goes on."""

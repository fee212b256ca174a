"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """A problem the user can fix: bad config, missing data, unusable run directory.

    The CLI prints `str(err)` on one line and exits non-zero (traceback only with --debug).
    The message must name the problem and the fix.
    """


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss; carries the step at which it happened."""

    def __init__(self, step: int, value: float):
        self.step, self.value = step, value
        super().__init__(
            f"loss became non-finite ({value}) at step {step}; the last good checkpoint was kept. "
            "Lower optim.lr or enable gradient clipping (optim.clip_norm=1.0)."
        )

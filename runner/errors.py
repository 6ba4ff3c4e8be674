"""lorarun's exception tree and the one table that turns exceptions into what the user reads.

Every error a user can cause or fix is a `LorarunError` (or a provider/remote error) with a one-line message;
the CLI prints that line and exits with the table's code. Anything else is a bug: it gets a short line plus
"run with --debug for the traceback".
"""
from __future__ import annotations


class LorarunError(Exception):
    exit_code = 1


class UserInputError(LorarunError):
    """Bad input found before any money is spent: exit code 2."""

    exit_code = 2


class SpecError(UserInputError):
    """The job file is wrong."""


class DatasetError(UserInputError):
    """The dataset is wrong (corrupt image, no repeat prefix, caption not UTF-8, empty)."""


class BudgetError(UserInputError):
    """No offer fits the job's max_cost / max price, or the user declined the estimate."""


class JobNotFound(UserInputError):
    pass


class PipelineError(LorarunError):
    """A phase failed after resources were engaged; the message says what happened to the instance."""


class EngineFailed(PipelineError):
    """The training engine reported `failed`."""


class Interrupted(LorarunError):
    exit_code = 130


def exit_code_and_message(exc: BaseException) -> tuple[int, str]:
    """The single mapping from exception to (exit code, one-line message)."""
    from lorarun.image.schema import ConfigError
    from lorarun.provider_adapters import errors as perr

    table: list[tuple[type[BaseException], int, str]] = [
        (LorarunError, -1, "{msg}"),
        (ConfigError, 2, "{msg}"),
        (perr.CredentialsMissing, 2, "{msg}"),
        (perr.AuthError, 2, "{provider}: the API key was refused ({msg}); check it and try again"),
        (perr.InsufficientFundsError, 2, "{provider}: not enough credit ({msg}); top up the account"),
        (perr.NoCapacityError, 1, "{provider}: no machine available right now ({msg}); try other GPUs or later"),
        (perr.OfferGoneError, 1, "{provider}: the offer was taken before it could be rented ({msg})"),
        (perr.RateLimitError, 1, "{provider}: rate limited ({msg}); wait a minute and retry"),
        (perr.ProviderError, 1, "{provider}: {msg}"),
        (KeyboardInterrupt, 130, "interrupted"),
    ]
    for cls, code, template in table:
        if isinstance(exc, cls):
            if code == -1:
                code = getattr(exc, "exit_code", 1)
            message = template.format(msg=_first_line(exc), provider=getattr(exc, "provider", "") or "provider")
            return code, message
    try:
        from .remote.errors import RemoteError

        if isinstance(exc, RemoteError):
            return 1, f"remote: {_first_line(exc)}"
    except ImportError:  # the remote package is optional for local-only installs
        pass
    return 1, f"internal error: {type(exc).__name__}: {_first_line(exc)} (run with --debug for the traceback)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""lorarun's exception tree and the one table that turns exceptions into what the user reads.

Every error a user can cause or fix is a `LorarunError` (or a provider/remote error) with a short message: one
line, or one line with a short indented list under it (the places a credential was looked for). An exception that
carries `.problems` (everything `validate` found) is shown one problem per line. The CLI prints what
`error_lines` returns and exits with the table's code. Anything else is a bug: it gets a short line plus
"run with --debug for the traceback".
"""

from __future__ import annotations

from typing import Any


class LorarunError(Exception):
    exit_code = 1


class UserInputError(LorarunError):
    """Bad input found before any money is spent: exit code 2."""

    exit_code = 2


class SpecError(UserInputError):
    """The job file is wrong."""


class BaseModelMissing(SpecError):
    """`model.base` names a local file or folder that is not there (yet): one problem among the others, so
    validate and estimate still show the dataset, the steps and the price."""


class DatasetError(UserInputError):
    """The dataset is wrong (corrupt image, no repeat prefix, caption not UTF-8, empty)."""


class InvalidJob(SpecError, DatasetError):
    """Everything `validate` found wrong with a job, one line per problem (file/field first, then what to do).

    `str()` is the first problem plus a count, so a one-line renderer stays truthful; `problems` holds them all
    for the renderer that lists them."""

    def __init__(self, problems: list[str]):
        self.problems: list[str] = [p for p in problems if p] or ["the job is invalid"]
        # What could still be judged, attached where it is known so validate and estimate go on with the rest: the
        # spec built from the sections that parsed (job/spec.py), those that failed, the partly validated job
        # (job/validate.py). `Any`: this module sits below the job modules and may not import them.
        self.spec: Any = None
        self.failed_sections: frozenset[str] = frozenset()
        self.job: Any = None
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more problem(s))" if more else ""))


class BudgetError(UserInputError):
    """No offer fits the job's max_cost / max price, or the user declined the estimate."""


class ProvidersUnseen(LorarunError):
    """A command could not look at one or more providers (no key, refused, down): never shown as "nothing
    there". `problems` says which and why; exit 2 when the fix is the user's (a key), else 1."""

    def __init__(self, problems: list[str], exit_code: int = 1):
        self.problems = problems
        self.exit_code = exit_code
        super().__init__(problems[0] if problems else "a provider could not be searched")


class JobNotFound(UserInputError):
    pass


class JobBusy(UserInputError):
    """Another live controller drives the job; `holder` says which (pid, host, command)."""

    def __init__(self, message: str, holder=None):
        super().__init__(message)
        self.holder = holder


class PipelineError(LorarunError):
    """A phase failed after resources were engaged; the message says what happened to the instance."""


class EngineFailed(PipelineError):
    """The training engine reported `failed`."""


class TeardownUnconfirmed(PipelineError):
    """The job ended but the provider never confirmed its instance gone: it may still bill (exit 3)."""

    exit_code = 3


class Interrupted(LorarunError):
    exit_code = 130


MAX_DETAIL_LINES = 12  # a message's list stays short: beyond this, the rest is counted, and --debug shows it


def error_lines(exc: BaseException) -> tuple[int, list[str]]:
    """What the CLI prints for `exc`: (exit code, lines). Each problem of a multi-problem error gets its own
    `error:` line; a multi-line message keeps its list (indented) under the first line."""
    code, message = exit_code_and_message(exc)
    problems = getattr(exc, "problems", None)
    if isinstance(problems, (list, tuple)) and len(problems) > 1:
        return code, [f"error: {str(p).strip()}" for p in problems]
    first, *rest = message.splitlines() or [""]
    detail = [line.rstrip() for line in rest if line.strip()]
    if len(detail) > MAX_DETAIL_LINES:
        hidden = len(detail) - MAX_DETAIL_LINES
        detail = detail[:MAX_DETAIL_LINES] + [f"  … {hidden} more line(s); --debug shows everything"]
    return code, [f"error: {first}"] + [line if line.startswith((" ", "\t")) else "  " + line for line in detail]


def exit_code_and_message(exc: BaseException) -> tuple[int, str]:
    """The single mapping from exception to (exit code, message). The message's first line stands alone (one-line
    contexts such as the estimate's per-provider failures use only it); further lines are its short list."""
    from lorarun.image.schema import ConfigError
    from lorarun.provider_adapters import errors as perr

    table: list[tuple[type[BaseException], int, str]] = [
        (LorarunError, -1, "{msg}"),
        (ConfigError, 2, "{msg}"),
        (perr.CredentialsMissing, 2, "{msg}"),
        (perr.ProviderMisconfigured, 2, "{provider}: {msg}"),
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
            msg = _message(exc) if template == "{msg}" else _first_line(exc)  # a list only under lorarun's own lines
            message = template.format(msg=msg, provider=getattr(exc, "provider", "") or "provider")
            return code, message
    try:
        from lorarun.sshlink.errors import RemoteError

        if isinstance(exc, RemoteError):
            return 1, f"remote: {_first_line(exc)}"
    except ImportError:  # the remote package is optional for local-only installs
        pass
    return 1, f"internal error: {type(exc).__name__}: {_first_line(exc)} (run with --debug for the traceback)"


def _message(exc: BaseException) -> str:
    """The whole message of an error lorarun wrote (a first line and perhaps a short list)."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

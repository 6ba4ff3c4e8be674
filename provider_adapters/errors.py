"""Typed provider errors. Adapters decide which one by status codes and error fields, never by matching prose."""

from __future__ import annotations


class ProviderError(Exception):
    """Anything the provider refused or failed. `retryable` tells the retry policy whether to try again."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None):
        super().__init__(message)
        self.provider = provider
        self.status = status


class AuthError(ProviderError):
    """The API key is missing, wrong or lacks a permission."""


class NoCapacityError(ProviderError):
    """No machine matches right now; another offer or a later try may work."""


class PoolDeniedError(NoCapacityError):
    """The key works, but this account may not rent this kind of machine (RunPod createPod 403: "Your account
    cannot access the requested pool. Skip this candidate, keep going." — runpod/docs
    `api-reference-v2/openapi.json` createPod). The next offer may well work, so it is not an AuthError."""


class OfferGoneError(ProviderError):
    """The offer was taken between search and create (Vast `no_such_ask`)."""


class InsufficientFundsError(ProviderError):
    """The account's balance or spend limit does not cover the rental."""


class RateLimitError(ProviderError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """5xx, connection reset, timeout: worth another try."""

    retryable = True


class CreateFailed(ProviderError):
    """Create failed, but the provider returned an instance id that may be billing: record it and destroy it."""

    def __init__(self, message: str, *, instance_id: str, **kw):
        super().__init__(message, **kw)
        self.instance_id = instance_id


class ProviderMisconfigured(ProviderError):
    """The provider cannot be used as configured (e.g. `ssh` without a host): a configuration error the user
    fixes, exit code 2 like every other one."""


class CredentialsMissing(ProviderError):
    """No API key found; the message names every place that was looked at."""

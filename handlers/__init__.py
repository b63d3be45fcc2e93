"""Use cases, one module per capability. Importing this package registers every command."""

from handlers import (  # noqa: F401
    actions,
    admin,
    broadcasts,
    cases,
    invites,
    letters,
    onboarding,
    preferences,
    privacy,
    reports,
    subscriptions,
)

"""Use cases, one package or module per capability; `capabilities()` is the app's default list."""

from __future__ import annotations

from bot.capability import Capability


def capabilities() -> list[Capability]:
    """Every capability, in the order /help lists them when their commands share an order."""
    from handlers import (
        actions,
        admin,
        approvals,
        broadcasts,
        cases,
        channels,
        invites,
        letters,
        onboarding,
        overview,
        preferences,
        privacy,
        reports,
        subscriptions,
        transfers,
    )

    return [
        onboarding.capability(),
        cases.capability(),
        subscriptions.capability(),
        reports.capability(),
        actions.capability(),
        letters.capability(),
        broadcasts.capability(),
        approvals.capability(),
        overview.capability(),
        invites.capability(),
        preferences.capability(),
        privacy.capability(),
        channels.capability(),
        admin.capability(),
        transfers.capability(),
    ]

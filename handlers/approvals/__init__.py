"""The two-person rule: pending approvals, /approve ID, /reject ID, and their 24-hour expiry.

`core.request` is what another capability calls when an act needs a second person; the acts
themselves stay with their owners (handlers/broadcasts, handlers/admin), which hand their
executors to `capability()` below: approvals never reach into another capability's tables.
"""

from __future__ import annotations

from bot.capability import Capability
from bot.jobs import PeriodicJob


def capability() -> Capability:
    # Imported here: the owners of the acts import `handlers.approvals.core` themselves.
    from handlers import admin
    from handlers.approvals.commands import expire_job, make_commands
    from handlers.broadcasts import approved_broadcast, drop_broadcast

    executors = {
        "broadcast": approved_broadcast,
        "promote": admin.approved_promotion,
        "revoke": admin.approved_revocation,
        "assign": admin.approved_assignment,
    }
    abandon = {"broadcast": drop_broadcast}
    return Capability(
        "approvals",
        commands=tuple(make_commands(executors, abandon)),
        jobs=(PeriodicJob("approvals-expiry", expire_job(abandon), 300),),
    )

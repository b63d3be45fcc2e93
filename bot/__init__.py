"""Vigil's running system: CLI, configuration, router, dispatcher, scheduler, transports."""

import zoneinfo

# Use the pinned `tzdata` package rather than whatever the host ships, so reminders fall at the
# same instant on every machine and in tests; upgrading tzdata is how rule changes arrive.
zoneinfo.reset_tzpath(to=[])

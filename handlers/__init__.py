"""Use cases, one module per capability. Importing this package registers every command."""

from handlers import cases, invites, onboarding, preferences  # noqa: F401

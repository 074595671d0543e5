"""What the registry writes in the log: registrations, status changes and the router's
phase changes. One concrete logger (the module's is a lazy proxy, costly per call on
the hot path), and whether info lines are wanted at all, decided once."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from actors.registry_state import Transition
from actors.role_state import Phase, RoleState
from protocol import ProtocolError, RegisterReply, RegisterRequest, Status

__all__ = ["RegistryLog"]

_CALM: Final = frozenset({Phase.STANDBY, Phase.TAKING_UP, Phase.LEADING})
"""Phases entered as a matter of course (logged at info; the others at warning)."""
_LED: Final = frozenset({Phase.LEADING, Phase.LAPSED})


class RegistryLog:
    """The registry's log lines."""

    def __init__(self) -> None:
        self.log = structlog.get_logger(component="registry").bind()
        is_enabled_for = getattr(self.log, "is_enabled_for", None)
        self.info = is_enabled_for(logging.INFO) if is_enabled_for else True
        """Whether info lines are wanted (the hot path skips building them when not)."""
        self._phase_since = 0.0

    def registration(self, request: RegisterRequest, outcome: RegisterReply | ProtocolError) -> None:
        """One registration: created, repeated, or refused (and why)."""
        if isinstance(outcome, ProtocolError):
            self.log.info(
                "registration",
                service_name=request.service_name,
                instance_id=request.instance_id,
                outcome="conflict" if outcome.status == Status.CONFLICT else str(outcome.code),
                status=int(outcome.status),
            )
            return
        if not self.info:
            return
        fields: dict[str, Any] = {}
        if isinstance(request.timestamp, (int, float)):
            fields["client_delay_ms"] = round((time.time() - request.timestamp) * 1000, 3)
        elif isinstance(request.timestamp, datetime) and request.timestamp.tzinfo is not None:
            delay = datetime.now(UTC) - request.timestamp
            fields["client_delay_ms"] = round(delay.total_seconds() * 1000, 3)
        self.log.info(
            "registration",
            service_name=request.service_name,
            instance_id=request.instance_id,
            outcome="created" if outcome.status == Status.CREATED else "repeated",
            status=int(outcome.status),
            **fields,
        )

    def transitions(self, transitions: list[Transition]) -> None:
        """A drain's status changes (new instances were logged as registrations)."""
        if not self.info:
            return
        for change in transitions:
            if change.old is None:
                continue  # a new instance: already logged as "registration"
            # A forgotten instance has no new status: `change=removed` says it all.
            fields = {} if change.new is None else {"new": change.new}
            self.log.info(
                "instance_status_changed" if change.old is not change.new else "instance_changed",
                service_name=change.service_name,
                instance_id=change.instance_id,
                change=change.event.type,
                old=change.old,
                reason=change.reason,
                revision=change.event.revision,
                **fields,
            )

    def phase(self, before: Phase, role: RoleState, now: float, **view: int) -> None:
        """The router's phase changed (`view`: the view's revision, instances ...):
        leadership taken or given up, the stream loaded, or another move."""
        fields: dict[str, Any] = {"reason": role.reason, **view}
        seconds = round(now - self._phase_since, 3)
        if role.phase is Phase.LEADING and before is Phase.TAKING_UP:
            self.log.info("leadership_taken", term=role.term, seconds=seconds, **fields)
        elif before in _LED and role.phase not in _LED:
            self.log.warning("leadership_given_up", phase=role.phase, **fields)
        elif before is Phase.LOADING and role.phase is Phase.STANDBY:
            self.log.info("registry_loaded", seconds=seconds, **fields)
        else:
            level = logging.INFO if role.phase in _CALM else logging.WARNING
            self.log.log(level, "role_changed", phase=role.phase, was=before, **fields)
        self._phase_since = now

    def started(self, now: float) -> None:
        """Phases are timed from now."""
        self._phase_since = now

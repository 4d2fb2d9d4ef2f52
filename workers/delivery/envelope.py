"""The typed job envelope: the one argument of every RQ job the Dispatcher creates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.lanes import Lane
from shared.payloads import Capability

ENVELOPE_VERSION = 1
"""Bumped when the wire form changes incompatibly; a job of another version fails loudly (dead letter)."""


@dataclass(frozen=True)
class JobPolicy:
    """Where a job's dead letters go and how it is retried; travels with the job, set where it is queued."""

    dlq_key: str
    source_queue: str
    max_retries: int
    backoff: list[int]
    lane: Lane = Lane.INTERACTIVE
    """The lane the job is queued on; retries, splits and deferrals stay on it."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "dlq": self.dlq_key,
            "source_queue": self.source_queue,
            "max_retries": self.max_retries,
            "backoff": list(self.backoff),
            "lane": self.lane.value,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobPolicy:
        return cls(
            str(data["dlq"]),
            str(data["source_queue"]),
            int(data["max_retries"]),
            list(data["backoff"]),
            Lane(data.get("lane", Lane.INTERACTIVE)),  # envelopes queued before lanes are interactive
        )


@dataclass(frozen=True)
class JobEnvelope:
    """One unit of work: a capability, its payloads, which attempt this is, and the retry policy."""

    capability: Capability
    payloads: list[dict[str, Any]]
    policy: JobPolicy
    attempts_before: int = 0
    """Attempts spent by earlier jobs for these payloads (a split or a requeue keeps counting)."""
    retries_granted: int = 0
    """RQ retries this job was given; with RQ's `retries_left` it says which attempt is running."""

    def attempt(self, retries_left: int | None) -> int:
        """Which attempt the job is on (while running) or was on (when it failed), counting earlier jobs."""
        return self.attempts_before + self.retries_granted - (retries_left or 0) + 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "capability": self.capability.value,
            "payloads": self.payloads,
            "policy": self.policy.to_wire(),
            "attempts_before": self.attempts_before,
            "retries_granted": self.retries_granted,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobEnvelope:
        if data.get("v") != ENVELOPE_VERSION:
            raise ValueError(f"job envelope version {data.get('v')!r}, this worker reads {ENVELOPE_VERSION}")
        return cls(
            capability=Capability(data["capability"]),
            payloads=list(data["payloads"]),
            policy=JobPolicy.from_wire(data["policy"]),
            attempts_before=int(data["attempts_before"]),
            retries_granted=int(data["retries_granted"]),
        )

    def item_id(self, payload: dict[str, Any]) -> Any:
        """The gallery id of one payload (photo_id or request_id), for logs and the poison-photo rule."""
        return payload.get("request_id" if self.capability is Capability.TEXT else "photo_id")


@dataclass(frozen=True)
class Handlers:
    """The RQ entry points of a job, by import path (RQ stores them so anyway); see tests/test_imports."""

    run: str = "workers.jobs.run_job"
    on_failure: str = "workers.failure.on_job_failure"


DEFAULT_HANDLERS = Handlers()

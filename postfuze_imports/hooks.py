"""Glue between the import job lifecycle and webhooks, used by the API and the worker."""

from __future__ import annotations

from postfuze_imports.db import Connection
from postfuze_imports.imports.jobs import job_payload
from postfuze_imports.records import ImportJob, JobStatus


async def record_import_finished(connection: Connection, job: ImportJob) -> None:
    """Write import.completed or import.failed in the job's final transaction."""
    from postfuze_imports.webhooks import events

    event_type = "import.completed" if job.status is JobStatus.COMPLETED else "import.failed"
    await events.record_event(
        connection,
        organization_id=job.organization_id,
        livemode=job.livemode,
        event_type=event_type,
        data=job_payload(job),
    )

"""A real ``livekit.agents`` ``JobRequest`` whose accept/reject answers are recorded."""

from __future__ import annotations

from livekit.agents.job import JobAcceptArguments, JobRequest
from livekit.protocol import agent as agent_proto, models

__all__ = ["Recorder", "job_request"]


class Recorder:
    """What the handler answered: ``rejected`` (terminate flags) and ``accepted`` arguments."""

    def __init__(self) -> None:
        self.rejected: list[bool] = []
        self.accepted: list[JobAcceptArguments] = []

    async def on_reject(self, terminate: bool) -> None:
        self.rejected.append(terminate)

    async def on_accept(self, args: JobAcceptArguments) -> None:
        self.accepted.append(args)


def job_request(
    metadata: str, *, agent_name: str, room: str = "room-1", room_metadata: str = ""
) -> tuple[JobRequest, Recorder]:
    """A job request for ``agent_name`` carrying ``metadata``, and its recorder."""
    rec = Recorder()
    job = agent_proto.Job(
        id="AJ_test",
        agent_name=agent_name,
        metadata=metadata,
        room=models.Room(name=room, metadata=room_metadata),
    )
    return JobRequest(job=job, on_reject=rec.on_reject, on_accept=rec.on_accept), rec

"""The one audit event of a request the policy refused, at any door: a page, /v1, the terminal.

access.policy.decide writes nothing, so a page that is looked at writes nothing either. A
refusal is worth a line: the door that turns it into a 403, a 404 or a closed terminal writes
it here, once, under the action that was asked for (job.submit, job.cancel, job.view,
cluster.view, terminal.open), with the decision's code as the reason, its sentence as the
message and its facts (the numbers behind it) in the details.
"""

from __future__ import annotations

from typing import Any

from access.policy import Decision
from audit.log import record as audit
from clusters.models import Cluster


def record(
    person: Any,
    cluster: Cluster,
    decision: Decision,
    *,
    request: Any = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    """Write the refusal `decision` of `person`'s request on `cluster`.

    `request` (a Django request or an ASGI scope) gives the event its client address and request id;
    `target` is what was asked about (default: the cluster); `details` add to the decision's facts.
    """
    audit(
        decision.facts["action"],
        actor=person if getattr(person, "is_authenticated", False) else None,
        cluster=cluster,
        target=target or cluster.slug,
        outcome="denied",
        reason=decision.code,
        message=decision.message,
        request=request,
        details={**decision.facts, **(details or {})},
    )

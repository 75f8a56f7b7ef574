"""Deploy tracking: which image each watched container target runs, so rollback knows "previous".

The container probe reports ``image`` and ``image_id`` for every container it looks at.
After each batch of results, the daemon (and ``paramedic check``) record the image of
each running container under its target key (the same key a runbook step resolves to,
e.g. ``container counterfactual-lab-prod``). :meth:`agent.store.sqlite.Store.record_image` keeps
only changes, so the history is the sequence of deploys, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.kernel.results import Result
from checks.base import CheckSpec


def image_records(specs: Mapping[str, CheckSpec], results: Iterable[Result]) -> list[tuple[str, str, str]]:
    """``(target key, image, image_id)`` for running containers seen by container checks."""
    latest: dict[str, Result] = {}
    for result in results:
        if result.type == "container" and result.observations.get("source") != "docker-event":
            latest[result.name] = result
    records: list[tuple[str, str, str]] = []
    if not latest:
        return records  # no container checks: a cron `check` of HTTP probes skips the remediation layer
    from remediations.base import Params, resolve_target

    for name, result in latest.items():
        spec = specs.get(name)
        if spec is None:
            continue
        key = resolve_target(Params(), spec).key
        for container in result.observations.get("containers") or ():
            image_id = container.get("image_id") if isinstance(container, Mapping) else None
            if image_id and container.get("state") == "running":
                record = (key, str(container.get("image") or image_id), str(image_id))
                if record not in records:
                    records.append(record)
    return records

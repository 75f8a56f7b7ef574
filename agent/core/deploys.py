"""Deploy tracking: which image each watched container target runs, so rollback knows "previous".

A probe that sees images says so through ``CheckSpec.deployed_images`` (the container
probe reports ``image`` and ``image_id`` for every container it looks at). After each
batch of results, the daemon (and ``paramedic check``) record the image of each running
container under its target key (the same key a runbook step resolves to,
e.g. ``container counterfactual-lab-prod``). :meth:`agent.store.sqlite.Store.record_image` keeps
only changes, so the history is the sequence of deploys, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.core.targets import check_target
from agent.kernel.results import Result
from checks.base import CheckSpec


def image_records(specs: Mapping[str, CheckSpec], results: Iterable[Result]) -> list[tuple[str, str, str]]:
    """``(target key, image, image_id)`` for the running containers the checks' latest probe
    results saw (``CheckSpec.deployed_images``; a Docker event's result is not a probe's)."""
    latest: dict[str, Result] = {}
    for result in results:
        if result.observations.get("source") != "docker-event":
            latest[result.name] = result
    records: list[tuple[str, str, str]] = []
    for name, result in latest.items():
        spec = specs.get(name)
        if spec is None:
            continue
        images = spec.deployed_images(result.observations)
        if not images:
            continue
        key = check_target(spec).key
        for image, image_id in images:
            record = (key, image, image_id)
            if record not in records:
                records.append(record)
    return records

"""Every model family the service fits. Routes, ``Job.kind`` and the ``Job.result`` union are built from this.

To add a family: write its solver module (``service/em/``), its schema module (``service/schemas/``) and its
registration (``service/families/<kind>.py`` with a ``FAMILY``), then list it here.
"""

from __future__ import annotations

from typing import Any

from service.families import coins, gaussian
from service.families.base import Family
from service.schemas.jobs import job_page_schema, job_schema

FAMILIES: tuple[Family[Any, Any, Any], ...] = (coins.FAMILY, gaussian.FAMILY)
BY_KIND: dict[str, Family[Any, Any, Any]] = {family.kind: family for family in FAMILIES}
KINDS: tuple[str, ...] = tuple(BY_KIND)

Job = job_schema(KINDS, [family.result for family in FAMILIES])
JobPage = job_page_schema(Job)

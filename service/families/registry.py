"""Every model family the service fits. Routes, ``Job.kind`` and the ``Job.result`` union are built from this.

To add a family: write its solver module (``service/em/``), its schema module (``service/schemas/``) and its
registration (``service/families/<kind>.py`` with a ``FAMILY``), then list it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Field

from service.families import abundances, alleles, coins, gaussian, gaussian_select, hmm
from service.families.base import Family
from service.schemas.jobs import job_page_schema, job_schema
from service.schemas.selection import SelectionResult

FAMILIES: tuple[Family[Any, Any, Any], ...] = (
    coins.FAMILY,
    gaussian.FAMILY,
    alleles.FAMILY,
    abundances.FAMILY,
    hmm.FAMILY,
)
BY_KIND: dict[str, Family[Any, Any, Any]] = {family.kind: family for family in FAMILIES}
KINDS: tuple[str, ...] = tuple(BY_KIND)

# Jobs run fits of every family, and model selections (each of whose candidates is a fit).
JOB_KINDS: tuple[str, ...] = (*KINDS, gaussian_select.KIND)
Job = job_schema(JOB_KINDS, [*(family.result for family in FAMILIES), SelectionResult])
JobPage = job_page_schema(Job)

# POST /v1/models: one import body per family, told apart by "kind".
if TYPE_CHECKING:

    class ModelImport(BaseModel):
        kind: str

else:
    ModelImport = Annotated[
        Union[tuple(family.use.import_request for family in FAMILIES)],  # noqa: UP007
        Field(discriminator="kind"),
    ]

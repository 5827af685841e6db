"""Fits beyond one machine: EM whose passes over the data run on a Dask cluster.

Needs the ``distributed`` extra (``dask[distributed]``, ``fsspec``); nothing else in the service imports this
package, so a plain install runs without them. Never imports the HTTP layer: a job runner calls
:func:`service.distributed.dask_em.fit_on_dask` in place of ``run_em``.
"""

"""Jobs queued on Redis with RQ and run by worker processes on any machine (``EM_BACKEND=distributed``).

- :mod:`.channel`: a job's events, cancel flag, heartbeat and end on Redis, read by every API replica;
- :mod:`.horse`: what an RQ work horse runs for a job (the same :func:`~service.jobs.worker.execute` as a
  local worker), committing the job's end to the shared store itself;
- :mod:`.manager`: the :class:`~service.jobs.manager.JobManager` an API replica uses;
- :mod:`service.worker`: the worker processes' entry point (``python -m service.worker``).
"""

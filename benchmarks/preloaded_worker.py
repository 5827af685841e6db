"""``python -m service.worker`` with the fit code imported first (a what-if of benchmarks/scale_out.py).

``service/worker.py`` imports RQ and the job's entry point but not the model families: each forked work horse
imports them again when it unpickles its job. Here the parent imports them before the pool forks, so the
horses inherit them; the difference in jobs/s is what that import costs per job.

    python -m benchmarks.preloaded_worker --processes N
"""

from __future__ import annotations

import service.families.registry  # noqa: F401  (imported for its side effect: every family's fit code loaded)
from service.worker import main

if __name__ == "__main__":
    main()

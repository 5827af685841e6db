"""Model families: one registration each, from which routes, ``Job.kind`` and the result union are built."""

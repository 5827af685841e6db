"""Jobs: worker processes that run fits, the store that keeps their records, and the manager over both."""

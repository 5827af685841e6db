"""Kept models: stored after every succeeded fit (or imported), used to predict, score and sample."""

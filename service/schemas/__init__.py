"""Pydantic request and response models, with the examples Swagger UI shows."""

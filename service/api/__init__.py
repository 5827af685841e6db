"""HTTP routers (one module per resource) and error handlers."""

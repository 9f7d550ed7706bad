"""HTTP layer: FastAPI app factory, routes, schemas."""

"""API routers (FastAPI bigger-applications layout); each module exposes ``router``."""

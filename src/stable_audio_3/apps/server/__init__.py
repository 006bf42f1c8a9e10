"""`stable-audio-server`: a local HTTP API over one model (FastAPI; `pip install ".[server]"`)."""

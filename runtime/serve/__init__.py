"""`samplegraph serve`: an HTTP job server over the same Runtime (optional extra `samplegraph[serve]`).

store.py persists jobs, sequenced events and outputs in SQLite (WAL); jobs.py runs them on worker threads;
security.py checks tokens, Host/Origin and body sizes; app.py is the ASGI app (FastAPI). Only app.py and
server.py import the web stack, so the rest of samplegraph never needs it."""

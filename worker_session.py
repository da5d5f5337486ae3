"""One worker client per Blender session: started on first Generate, kept alive with the model loaded,
ended by Unload Model, disabling the extension, loading another file mid-job, or quitting Blender."""

import atexit

_client = None
_client_key = None


def get_client(python: str | None):
    """The session's client; a new one when the interpreter changed or the old worker died."""
    from .core.worker import WorkerClient

    global _client, _client_key
    if _client is not None and _client_key != python:
        close()
    if _client is None:
        _client = WorkerClient(python=python)
        _client_key = python
    return _client


def current_client():
    return _client


def close():
    """End the worker process (if any). Safe to call at any time, also twice."""
    global _client, _client_key
    client, _client, _client_key = _client, None, None
    if client is not None:
        client.close()


atexit.register(close)

"""The project's own error types. Every failure a user can meet is one of these, with a message that says
what happened and what to do; callers show str(error) as is."""


class ImageToMeshError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(ImageToMeshError):
    """The image or a setting cannot be used."""


class ModelError(ImageToMeshError):
    """The model cannot be found, downloaded, read or run."""


class WorkerError(ImageToMeshError):
    """The worker process crashed, hung or broke the protocol."""


class Cancelled(ImageToMeshError):
    """The user cancelled the job."""

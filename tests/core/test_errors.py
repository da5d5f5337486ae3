import core


def test_every_error_is_an_image_to_mesh_error():
    for error in (core.InputError, core.ModelError, core.WorkerError, core.Cancelled):
        assert issubclass(error, core.ImageToMeshError)
        assert not issubclass(error, (ValueError, RuntimeError, OSError))

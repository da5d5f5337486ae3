"""Cancel the running Generate, or end the worker to free the model's memory."""

import bpy

from .. import worker_session
from ..properties import job_status
from . import generate


class IMAGE_TO_MESH_OT_cancel(bpy.types.Operator):
    """Stop the running Generate 3D; nothing is added to the scene"""

    bl_idname = "image_to_mesh.cancel"
    bl_label = "Cancel Generate"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        if generate.active_job() is None:
            cls.poll_message_set("No Generate 3D is running")
            return False
        return True

    def execute(self, context):
        generate.active_job().request_cancel()
        return {"FINISHED"}


class IMAGE_TO_MESH_OT_unload_model(bpy.types.Operator):
    """End the worker process and free the memory its model uses; the next Generate loads it again"""

    bl_idname = "image_to_mesh.unload_model"
    bl_label = "Unload Model"

    @classmethod
    def poll(cls, context):
        if generate.active_job() is not None:
            cls.poll_message_set("Wait for the running Generate 3D to end, or cancel it")
            return False
        return True

    def execute(self, context):
        was_running = worker_session.current_client() is not None
        worker_session.close()
        job_status(context).result = ""
        self.report({"INFO"}, "Model unloaded." if was_running else "No model was loaded.")
        return {"FINISHED"}

from .bake import IMAGE_TO_MESH_OT_bake_texture
from .generate import IMAGE_TO_MESH_OT_generate
from .job_control import IMAGE_TO_MESH_OT_cancel, IMAGE_TO_MESH_OT_unload_model

classes = (IMAGE_TO_MESH_OT_generate, IMAGE_TO_MESH_OT_cancel, IMAGE_TO_MESH_OT_unload_model,
           IMAGE_TO_MESH_OT_bake_texture)

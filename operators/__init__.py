from .bake import IMAGE_TO_MESH_OT_bake_texture
from .drop import IMAGE_TO_MESH_FH_images
from .generate import IMAGE_TO_MESH_OT_generate, IMAGE_TO_MESH_OT_generate_files
from .job_control import IMAGE_TO_MESH_OT_cancel, IMAGE_TO_MESH_OT_unload_model
from .presets import IMAGE_TO_MESH_OT_preset_add

classes = (IMAGE_TO_MESH_OT_generate, IMAGE_TO_MESH_OT_generate_files, IMAGE_TO_MESH_OT_cancel,
           IMAGE_TO_MESH_OT_unload_model, IMAGE_TO_MESH_OT_preset_add, IMAGE_TO_MESH_FH_images,
           IMAGE_TO_MESH_OT_bake_texture)

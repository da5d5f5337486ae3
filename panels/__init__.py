from .presets import IMAGE_TO_MESH_PT_presets
from .sidebar import VIEW3D_PT_image_to_mesh, VIEW3D_PT_image_to_mesh_advanced, VIEW3D_PT_image_to_mesh_output

classes = (IMAGE_TO_MESH_PT_presets, VIEW3D_PT_image_to_mesh, VIEW3D_PT_image_to_mesh_output,
           VIEW3D_PT_image_to_mesh_advanced)

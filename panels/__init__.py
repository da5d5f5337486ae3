from .sidebar import VIEW3D_PT_image_to_mesh, VIEW3D_PT_image_to_mesh_advanced

classes = (VIEW3D_PT_image_to_mesh, VIEW3D_PT_image_to_mesh_advanced)

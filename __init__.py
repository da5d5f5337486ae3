"""Image to Mesh: turn one picture into a coloured 3D mesh, locally, with a TripoSR model.

Sidebar (N) > Image to Mesh in the 3D viewport, or bpy.ops.image_to_mesh.generate(filepath=...) from a script.
"""

# Blender imports this folder as a package. pytest, collecting the repository, may import this file on its own
# (under the clone folder's name, which need not be a valid module name), where relative imports cannot work.
if __package__:
    from .addon import register, unregister

import bpy
settings = bpy.context.scene.image_to_mesh

settings.remove_background = True
settings.foreground_ratio = 0.85
settings.resolution = 192
settings.threshold = 25.0

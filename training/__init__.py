"""Training and evaluation of TripoSR-architecture models with the `core` model classes. Not part of the
extension: the extension and `core` never import this package."""

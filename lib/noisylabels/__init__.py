"""noisylabels: the shared library behind the pipeline's stages (see README.md)."""

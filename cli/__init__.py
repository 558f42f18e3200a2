"""The calcimage command line (installed as ``calcimage.cli``)."""

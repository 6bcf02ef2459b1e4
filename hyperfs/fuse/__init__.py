"""The drive as a FUSE mount (pyfuse3 on trio)."""

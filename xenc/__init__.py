"""The real-code engine (`vtdtrace record --engine xen-c --xen-tree PATH`).

The VT-d reassignment functions of a user's Xen tree are extracted by name
(extract.py), compiled in user space against vtdtrace's own stand-in C
(standin/, build.py) and driven through a scenario (runtime.py), which turns
what the stand-ins observe into ordinary vtdtrace events; compare.py checks
a real-code trace against a model trace, fetch.py gets Debian's 4.17.5
source for tests and CI.  docs/REALCODE.md explains the whole.
"""

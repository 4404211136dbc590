"""The ``cython`` name for the twin sources (``dataplane/proxy.py``) where Cython is not
installed: uncompiled they read only ``cython.compiled``, which is False here (the Cython
package's own stand-in answers the same when it is installed)."""

compiled = False

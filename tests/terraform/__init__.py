"""Checks of terraform/ with no terraform binary or provider download (helpers in ``hcl.py``)."""

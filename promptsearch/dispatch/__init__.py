"""Dispatch: the search loop's trials on Ray Tune (the only package that imports Ray)."""

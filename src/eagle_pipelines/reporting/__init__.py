"""Figures and HTML pages shared by the experiment reports (no Kedro)."""

"""The EAGLE method, importable without Kedro (numpy + torch only)."""

"""An example recmig strategy plugin (see README.md beside it)."""

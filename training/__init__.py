"""training: builds every bundle the app serves. ``python -m training --help``."""

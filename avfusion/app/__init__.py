"""The application: the `avfusion` command, prediction on new videos, feature export, overlays and plots."""

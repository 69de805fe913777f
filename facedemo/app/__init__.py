"""The app around the pipeline: settings, the service over the vault, the web page, the command line."""

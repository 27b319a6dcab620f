"""Bundled models (weights and model cards); installed as cerberus_cli.bundled."""

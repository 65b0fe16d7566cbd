"""Workflow steps of albert-srl: small typer CLIs run by project.yml."""

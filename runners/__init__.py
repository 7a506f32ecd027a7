"""Runners: models, data and jobs that produce observations for a frozen protocol."""

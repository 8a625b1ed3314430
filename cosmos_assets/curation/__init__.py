"""Curation: landing zone → raw videos → clips → scores → filtered clips."""

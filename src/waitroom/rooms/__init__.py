"""Admission: who gets into a room, when, and what a visitor who waits is told."""

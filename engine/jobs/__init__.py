"""Scoring records and files too large for memory: resumable file jobs, and Ray Data on a cluster."""

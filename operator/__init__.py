"""Kopf handlers (BackupJob, RetentionPolicy): see the operator issue."""

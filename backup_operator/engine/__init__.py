"""The backup engine: walk a source tree, hash, deduplicate, upload, restore, verify."""

"""Cell families: one file each."""

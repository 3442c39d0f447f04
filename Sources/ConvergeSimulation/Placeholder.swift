// Placeholder so the package builds until the simulator lands; the simulator engineer replaces or deletes this file.

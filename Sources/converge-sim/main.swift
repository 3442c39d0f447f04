// Placeholder so the package builds until the simulator lands; the simulator engineer replaces or deletes this file (delete it if you use @main).
print("converge-sim is not built yet")

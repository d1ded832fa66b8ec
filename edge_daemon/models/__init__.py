"""Model resolution: ids, the on-disk model store, the registry client and the loaded-model manager."""

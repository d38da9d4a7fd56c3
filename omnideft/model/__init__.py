"""Model code every family shares: the tiny presets' names and vocabulary, quantization. Each family's own loading,
saving and architecture live in omnideft/families/<name>/."""

"""The plugin machinery: the hook specifications (the plugin author's manual), the registry of what
plugins register, the plugin manager factory, and the built-in plugins."""

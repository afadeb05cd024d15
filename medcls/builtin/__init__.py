"""Built-in plugins: ordinary pluggy plugins registered by `medcls.plugins.DEFAULT_PLUGINS`."""

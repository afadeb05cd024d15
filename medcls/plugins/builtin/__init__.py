"""Built-in plugins: ordinary pluggy plugins registered by `medcls.plugins.manager.DEFAULT_PLUGINS`."""
